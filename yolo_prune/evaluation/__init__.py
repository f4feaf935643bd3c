"""COCO evaluation: NMS, batched inference and mAP (faster-coco-eval / pycocotools backends)."""
from yolo_prune.evaluation.coco_eval import COCO_BACKENDS, coco_metrics
from yolo_prune.evaluation.evaluator import detections_to_coco, evaluate, yolov7_decode
from yolo_prune.evaluation.nms import non_max_suppression

__all__ = ["COCO_BACKENDS", "coco_metrics", "detections_to_coco", "evaluate", "non_max_suppression", "yolov7_decode"]
