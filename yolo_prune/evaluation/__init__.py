"""COCO evaluation: NMS, batched inference and mAP (faster-coco-eval / pycocotools backends)."""
from yolo_prune.evaluation.coco_eval import COCO_BACKENDS, coco_metrics
from yolo_prune.evaluation.evaluator import detections_to_coco, evaluate, first_output
from yolo_prune.evaluation.nms import non_max_suppression
from yolo_prune.evaluation.settings import EvalSettings

__all__ = ["COCO_BACKENDS", "EvalSettings", "coco_metrics", "detections_to_coco", "evaluate", "first_output",
           "non_max_suppression"]
