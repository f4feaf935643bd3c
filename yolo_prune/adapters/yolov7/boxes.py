"""Box helpers for the losses: format conversion, pairwise IoU and the paired CIoU.

Pairwise IoU comes from ``torchvision.ops.box_iou`` (exactly what the OTA cost needs).
CIoU is written here because the YOLOv7 box loss needs the CIoU *value* (it also becomes
the objectness target), on centre-format boxes, computed stably in float32 under AMP;
``torchvision.ops.complete_box_iou_loss`` returns only ``1 - CIoU`` on corner boxes and
divides by a raw height.
"""
from __future__ import annotations

import math

import torch
from torchvision.ops import box_iou as _torchvision_box_iou


def xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` (cx, cy, w, h) -> (x1, y1, x2, y2)."""
    xy, half_wh = boxes[..., :2], boxes[..., 2:4] / 2
    return torch.cat((xy - half_wh, xy + half_wh), dim=-1)


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of corner boxes ``[N, 4]`` x ``[M, 4]`` -> ``[N, M]`` (torchvision)."""
    return _torchvision_box_iou(boxes1, boxes2)


def bbox_ciou(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU of paired centre-format boxes ``[N, 4]`` and ``[N, 4]`` -> ``[N]``.

    ``CIoU = IoU - rho^2 / c^2 - alpha * v`` (Zheng et al., 2020) where ``rho`` is the
    distance between the centres, ``c`` the diagonal of the smallest enclosing box,
    ``v`` the aspect-ratio mismatch and ``alpha = v / (1 - IoU + v)`` (held constant for the
    gradient, as in the paper and in YOLOv7). Identical boxes give 1; the value lies in
    (-1.5, 1]. Computed in float32 so that fp16 outputs under AMP stay finite.

    Example:
        >>> b = torch.tensor([[5.0, 5.0, 2.0, 4.0]])
        >>> float(bbox_ciou(b, b))
        1.0
    """
    b1, b2 = boxes1.float(), boxes2.float()
    c1, c2 = xywh_to_xyxy(b1), xywh_to_xyxy(b2)
    w1, h1 = b1[:, 2], b1[:, 3] + eps
    w2, h2 = b2[:, 2], b2[:, 3] + eps
    inter_wh = (torch.min(c1[:, 2:], c2[:, 2:]) - torch.max(c1[:, :2], c2[:, :2])).clamp(min=0)
    inter = inter_wh[:, 0] * inter_wh[:, 1]
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    enclose_wh = torch.max(c1[:, 2:], c2[:, 2:]) - torch.min(c1[:, :2], c2[:, :2])
    diagonal_sq = enclose_wh.pow(2).sum(1) + eps
    centre_dist_sq = (b2[:, :2] - b1[:, :2]).pow(2).sum(1)
    v = (4 / math.pi**2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)).pow(2)
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (centre_dist_sq / diagonal_sq + alpha * v)
