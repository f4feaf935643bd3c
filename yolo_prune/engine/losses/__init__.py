"""Training losses: the YOLOv7 detection loss (plain / OTA / auxiliary-head OTA), knowledge
distillation, and the hyper-parameter files they read.

* ``build_yolov7_loss(model, hyp)`` -> ``loss_fn(outputs, targets, imgs) -> (loss * bs, [box, obj, cls])``
* ``build_distill_loss(student, teacher, hyp, kind='output')`` -> ``fn(student_out, teacher_out, imgs)``
* ``load_hyp(path)`` -> validated hyp dict; ``scale_hyp_for_model`` is the gain scaling of ``train.py``.
"""
from __future__ import annotations

from yolo_prune.engine.losses.assign import Assignment, find_candidates
from yolo_prune.engine.losses.boxes import bbox_ciou, box_iou, xywh_to_xyxy
from yolo_prune.engine.losses.distill import DISTILL_LOSSES, OutputDistillLoss, bernoulli_kl, build_distill_loss
from yolo_prune.engine.losses.hyp import HypError, KNOWN_KEYS, REQUIRED_KEYS, load_hyp, validate_hyp
from yolo_prune.engine.losses.ota import ota_assign
from yolo_prune.engine.losses.yolov7 import (YOLOv7Loss, build_yolov7_loss, detection_head, objectness_balance,
                                             scale_hyp_for_model)

__all__ = [
    "Assignment", "DISTILL_LOSSES", "HypError", "KNOWN_KEYS", "OutputDistillLoss", "REQUIRED_KEYS", "YOLOv7Loss",
    "bbox_ciou", "bernoulli_kl", "box_iou", "build_distill_loss", "build_yolov7_loss", "detection_head",
    "find_candidates", "load_hyp", "objectness_balance", "ota_assign", "scale_hyp_for_model", "validate_hyp",
    "xywh_to_xyxy",
]
