"""Non-maximum suppression for YOLOv7-layout predictions (torchvision's batched NMS)."""
from __future__ import annotations

import torch
import torchvision

from yolo_prune.data.transforms import cxcywh_to_xyxy
from yolo_prune.evaluation.settings import DEFAULTS

MAX_NMS_INPUT = 30_000  # boxes entering NMS per image, highest scores first (as YOLOv7)


def non_max_suppression(pred: torch.Tensor, conf_thres: float = DEFAULTS.conf_thres,
                        iou_thres: float = DEFAULTS.iou_thres, max_det: int = DEFAULTS.max_det,
                        classes: list[int] | None = None, agnostic: bool = False, multi_label: bool = True
                        ) -> list[torch.Tensor]:
    """Per-class NMS of ``[B, N, 5 + nc]`` predictions (cx, cy, w, h, objectness, class probs).

    Defaults are those of YOLOv7's ``test.py`` (mAP evaluation). The score of a box and class is
    ``objectness * class probability``; with one class it is the objectness alone (YOLOv7 does
    not train the class output of single-class models).

    Args:
        pred: Decoded predictions in input-image pixels.
        conf_thres: Drop scores at or below this.
        iou_thres: Suppress same-class boxes overlapping a better one by more than this IoU.
        max_det: Keep at most this many detections per image (the best ones).
        classes: Keep only these class indices.
        agnostic: Suppress across classes.
        multi_label: One candidate per (box, class) above ``conf_thres`` instead of the best
            class only (YOLOv7's evaluation setting; raises recall at low thresholds).

    Returns:
        One ``[n, 6]`` tensor per image: x1, y1, x2, y2, score, class, by descending score.
    """
    if pred.ndim != 3 or pred.shape[-1] < 6:
        raise ValueError(f"expected predictions [batch, boxes, 5 + classes], got shape {tuple(pred.shape)}")
    nc = pred.shape[-1] - 5
    out = []
    for x in pred:
        x = x[x[:, 4] > conf_thres]
        scores = x[:, 4:5] if nc == 1 else x[:, 5:] * x[:, 4:5]
        boxes = cxcywh_to_xyxy(x[:, :4])
        if multi_label and nc > 1:
            i, j = (scores > conf_thres).nonzero(as_tuple=True)
            det = torch.cat((boxes[i], scores[i, j, None], j[:, None].to(x.dtype)), 1)
        else:
            conf, j = scores.max(1, keepdim=True)
            det = torch.cat((boxes, conf, j.to(x.dtype)), 1)[conf.view(-1) > conf_thres]
        if classes is not None:
            det = det[(det[:, 5:6] == torch.tensor(classes, device=det.device, dtype=det.dtype)).any(1)]
        out.append(_suppress(det, iou_thres, max_det, agnostic))
    return out


def _suppress(det: torch.Tensor, iou_thres: float, max_det: int, agnostic: bool) -> torch.Tensor:
    if not len(det):
        return det
    if len(det) > MAX_NMS_INPUT:
        det = det[det[:, 4].argsort(descending=True)[:MAX_NMS_INPUT]]
    groups = torch.zeros_like(det[:, 5]) if agnostic else det[:, 5]
    keep = torchvision.ops.batched_nms(det[:, :4].float(), det[:, 4].float(), groups, iou_thres)
    return det[keep[:max_det]]
