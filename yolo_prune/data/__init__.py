"""COCO-format detection data: dataset, letterbox, augmentation, data.yaml, synthetic shapes."""
from yolo_prune.data.coco import CocoAnnotations, load_coco_annotations
from yolo_prune.data.config import DataConfig, load_data_config
from yolo_prune.data.dataset import CocoDetectionDataset, build_dataloader
from yolo_prune.data.errors import DataError, DataWarning
from yolo_prune.data.transforms import cxcywh_to_xyxy, letterbox, scale_boxes, xyxy_to_cxcywh

__all__ = [
    "CocoAnnotations", "CocoDetectionDataset", "DataConfig", "DataError", "DataWarning", "build_dataloader",
    "cxcywh_to_xyxy", "letterbox", "load_coco_annotations", "load_data_config", "scale_boxes", "xyxy_to_cxcywh",
]
