"""Official YOLOv7 (WongKinYiu/yolov7), through the compatible ``models`` package.

Everything this family knows lives here:

* ``adapter``: ``YOLOv7Adapter`` (registered as ``"yolov7"``), the pruning and training facts;
* ``checkpoint``: safe loading (an allow-list of the classes official files pickle) and saving
  in the official dict format;
* ``loss`` with ``assign``, ``ota`` and ``boxes``: the detection loss (plain / OTA / aux OTA);
* ``distill``: output distillation between two models of this family.

``build_yolov7_loss(model, hyp)`` -> ``loss_fn(outputs, targets, imgs) -> (loss * bs, [box, obj, cls])``;
``build_distill_loss(student, teacher, hyp)`` -> ``fn(student_out, teacher_out, imgs)``.
"""
from __future__ import annotations

from yolo_prune.adapters.yolov7.adapter import YOLOv7Adapter
from yolo_prune.adapters.yolov7.assign import Assignment, find_candidates
from yolo_prune.adapters.yolov7.boxes import bbox_ciou, box_iou, xywh_to_xyxy
from yolo_prune.adapters.yolov7.distill import DISTILL_LOSSES, OutputDistillLoss, bernoulli_kl, build_distill_loss
from yolo_prune.adapters.yolov7.loss import (
                                             YOLOv7Loss,
                                             build_yolov7_loss,
                                             detection_head,
                                             objectness_balance,
                                             scale_hyp_for_model,
)
from yolo_prune.adapters.yolov7.ota import ota_assign

__all__ = [
    "Assignment", "DISTILL_LOSSES", "OutputDistillLoss", "YOLOv7Adapter", "YOLOv7Loss", "bbox_ciou", "bernoulli_kl",
    "box_iou", "build_distill_loss", "build_yolov7_loss", "detection_head", "find_candidates", "objectness_balance",
    "ota_assign", "scale_hyp_for_model", "xywh_to_xyxy",
]
