"""YOLOv7's OTA assignment: a dynamic subset of the shape-ratio candidates, per image.

For every image, the candidate predictions (``assign.find_candidates``) are decoded to
pixel boxes and compared with every ground-truth box of that image:

* ``cost = class_cost + 3 * (-log IoU)``, where ``class_cost`` is the binary cross-entropy
  between ``sqrt(sigmoid(cls) * sigmoid(obj))`` and the target's one-hot class;
* each target keeps its ``k`` cheapest candidates, ``k = max(1, int(sum of its top-q IoUs))``
  (SimOTA's dynamic k; ``q`` = 10 for ``ComputeLossOTA``, 20 for ``ComputeLossAuxOTA``);
* a candidate claimed by several targets goes to the cheapest one.

A kept candidate is trained towards the target it was matched to, which need not be the
target that proposed it. Matching runs without gradients, in float32. Candidates tied in
cost (one cell proposed by several targets) may be picked in another order than YOLOv7's
per-target ``topk`` loop; otherwise the selection is the same.
"""
from __future__ import annotations

import torch

from yolo_prune.adapters.yolov7.assign import Assignment, decode_boxes, gather_predictions
from yolo_prune.adapters.yolov7.boxes import box_iou, xywh_to_xyxy

IOU_COST_WEIGHT = 3.0


@torch.no_grad()
def ota_assign(outputs: list[torch.Tensor], targets: torch.Tensor, candidates: Assignment, anchors: torch.Tensor,
               strides: torch.Tensor, image_hw: tuple[int, int], topk_iou: int) -> Assignment:
    """Keeps the OTA-selected subset of ``candidates`` with their matched targets.

    Args:
        outputs: Train-mode maps ``[B, na, ny, nx, no]`` whose predictions set the cost.
        targets: ``[M, 6]`` = (image, class, cx, cy, w, h) normalised.
        candidates: Shape-ratio candidates of the same levels.
        anchors: ``[nl, na, 2]`` anchors in stride units.
        strides: ``[nl]`` level strides in pixels.
        image_hw: Input size ``(H, W)`` in pixels.
        topk_iou: How many best IoUs set a target's dynamic k (10 or 20 in YOLOv7).

    Returns:
        The positives, ordered by image; ``target`` holds each one's matched target row.
    """
    with torch.autocast(device_type=targets.device.type, enabled=False):
        pred_boxes, pred_scores = _decode_candidates(outputs, candidates, anchors, strides)
        height, width = image_hw
        gt_boxes = xywh_to_xyxy(targets[:, 2:6].float() * targets.new_tensor([width, height, width, height]))
        gt_classes = targets[:, 1].long()
        keep, matched = [], []
        for image in torch.unique(candidates.image).tolist():
            cand_idx = (candidates.image == image).nonzero(as_tuple=True)[0]
            gt_idx = (targets[:, 0].long() == image).nonzero(as_tuple=True)[0]
            fg, gt_of_fg = match_image(gt_boxes[gt_idx], gt_classes[gt_idx], pred_boxes[cand_idx],
                                       pred_scores[cand_idx], topk_iou)
            keep.append(cand_idx[fg])
            matched.append(gt_idx[gt_of_fg])
    if not keep:
        return candidates.select(torch.zeros_like(candidates.level, dtype=torch.bool))
    positives = candidates.select(torch.cat(keep))
    positives.target = torch.cat(matched)
    return positives


def _decode_candidates(outputs: list[torch.Tensor], candidates: Assignment, anchors: torch.Tensor,
                       strides: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidates' predicted corner boxes in pixels ``[K, 4]`` and class scores ``[K, nc]``."""
    raw = gather_predictions(outputs, candidates).float()
    boxes = decode_boxes(raw[:, :4], candidates, anchors.float())
    stride = strides.to(raw)[candidates.level, None]
    cell = torch.stack((candidates.gi, candidates.gj), dim=1).to(raw)
    pixel_boxes = torch.cat(((boxes[:, :2] + cell) * stride, boxes[:, 2:] * stride), dim=1)
    scores = (raw[:, 5:].sigmoid() * raw[:, 4:5].sigmoid()).sqrt()
    return xywh_to_xyxy(pixel_boxes), scores


def match_image(gt_boxes: torch.Tensor, gt_classes: torch.Tensor, pred_boxes: torch.Tensor,
                pred_scores: torch.Tensor, topk_iou: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic-k matching of one image's ``G`` targets against its ``P`` candidates.

    Args:
        gt_boxes: ``[G, 4]`` corner boxes in pixels.
        gt_classes: ``[G]`` class indices.
        pred_boxes: ``[P, 4]`` corner boxes in pixels.
        pred_scores: ``[P, nc]`` ``sqrt(class probability * objectness)``.
        topk_iou: How many best IoUs are summed into each target's k.

    Returns:
        ``(fg [P] bool, matched [F] long)``: which candidates are positives and, for each,
        the index (0..G-1) of its target.
    """
    num_gt, num_pred = gt_boxes.shape[0], pred_boxes.shape[0]
    if num_gt == 0 or num_pred == 0:
        return torch.zeros(num_pred, dtype=torch.bool, device=pred_boxes.device), gt_classes.new_zeros(0)
    iou = box_iou(gt_boxes, pred_boxes)
    cost = _class_cost(gt_classes, pred_scores) + IOU_COST_WEIGHT * -torch.log(iou + 1e-8)
    dynamic_k = iou.topk(min(topk_iou, num_pred), dim=1).values.sum(1).int().clamp(min=1)
    cheapest = cost.topk(int(dynamic_k.max()), dim=1, largest=False).indices  # [G, kmax]
    take = torch.arange(cheapest.shape[1], device=cost.device)[None] < dynamic_k[:, None]
    rows = torch.arange(num_gt, device=cost.device)[:, None].expand_as(cheapest)
    matching = torch.zeros_like(cost, dtype=torch.bool)
    matching[rows[take], cheapest[take]] = True
    contested = matching.sum(0) > 1
    if contested.any():  # a prediction claimed twice goes to the target that costs least
        matching[:, contested] = False
        matching[cost[:, contested].argmin(0), contested.nonzero(as_tuple=True)[0]] = True
    fg = matching.any(0)
    return fg, matching[:, fg].float().argmax(0)


def _class_cost(gt_classes: torch.Tensor, scores: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """``[G, P]`` sum over classes of BCE(score, one-hot(target class)) without a ``[G, P, nc]`` tensor.

    ``sum_c BCE = sum_c -log(1 - y_c) + (log(1 - y_t) - log(y_t))`` for target class ``t``.
    """
    y = scores.clamp(eps, 1 - eps)
    log_neg = torch.log1p(-y)  # [P, nc]
    all_negative = -log_neg.sum(1)  # [P]
    correction = (log_neg - torch.log(y))[:, gt_classes].T  # [G, P]
    return all_negative[None] + correction
