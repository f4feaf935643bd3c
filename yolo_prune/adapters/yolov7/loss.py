"""The YOLOv7 training loss (``utils/loss.py`` semantics of WongKinYiu/yolov7).

One class covers the three official variants:

=====================  ==================================  ===========================
official class         assignment                          chosen by ``build_yolov7_loss``
=====================  ==================================  ===========================
``ComputeLoss``        shape ratio, 3 cells (``assign``)   hyp ``loss_ota: 0``
``ComputeLossOTA``     ratio candidates + OTA, top-10 IoU   hyp ``loss_ota: 1`` (default)
``ComputeLossAuxOTA``  lead: OTA (3 cells, top-20);        head is ``IAuxDetect``
                       aux: OTA (5 cells, top-20), both
                       matched on the *lead* predictions
=====================  ==================================  ===========================

Per level ``i``: box loss ``mean(1 - CIoU)`` over the positives; objectness BCE over every
cell against ``(1 - gr) + gr * CIoU`` at the positives (0 elsewhere), weighted by
``balance[i]``; class BCE (only when ``nc > 1``) with label-smoothed targets. Auxiliary
maps add the same terms times 0.25. The sums are multiplied by the gains ``box``, ``obj``,
``cls`` *after* ``scale_hyp_for_model`` (the scaling official ``train.py`` applies to the
hyp). The call returns ``(loss * batch_size, [box, obj, cls] detached)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from yolo_prune.adapters.yolov7.assign import Assignment, decode_boxes, find_candidates, grid_sizes, target_boxes
from yolo_prune.adapters.yolov7.boxes import bbox_ciou
from yolo_prune.adapters.yolov7.ota import ota_assign
from yolo_prune.engine.hyp import LOSS_KEYS, missing_keys_message

AUX_WEIGHT = 0.25  # weight of every auxiliary-head term (official ComputeLossAuxOTA)
LEAD_BIAS, AUX_BIAS = 0.5, 1.0  # neighbour-cell radius: 3 cells for the lead head, 5 for aux
OTA_TOPK_IOU, AUX_OTA_TOPK_IOU = 10, 20
REFERENCE_IMG_SIZE = 640  # the image size the official objectness gain was tuned at


def objectness_balance(nl: int) -> list[float]:
    """Per-level objectness weights, P3 first: ``[4.0, 1.0, 0.4]`` for 3 levels, else P3-P7 values."""
    if nl == 3:
        return [4.0, 1.0, 0.4]
    if not 1 <= nl <= 5:
        raise ValueError(f"the YOLOv7 loss supports 1 to 5 detection levels, the head has {nl}")
    return [4.0, 1.0, 0.25, 0.06, 0.02][:nl]


def scale_hyp_for_model(hyp: dict, nc: int, nl: int, img_size: int) -> dict:
    """Returns a copy of ``hyp`` with the loss gains scaled to the model, as official ``train.py`` does.

    ``box *= 3 / nl``, ``cls *= nc / 80 * 3 / nl``, ``obj *= (img_size / 640) ** 2 * 3 / nl``:
    the hyp files are tuned for COCO (80 classes), 3 levels and 640 px. ``build_yolov7_loss``
    calls this itself, so pass it the hyp *as written in the yaml*; scaling twice would
    shrink the gains again.

    Args:
        hyp: Hyper-parameters with ``box``, ``cls``, ``obj``.
        nc: Number of classes.
        nl: Number of detection levels (lead head only).
        img_size: Training image size in pixels.
    """
    scaled = dict(hyp)
    scaled["box"] = hyp["box"] * 3.0 / nl
    scaled["cls"] = hyp["cls"] * nc / 80.0 * 3.0 / nl
    scaled["obj"] = hyp["obj"] * (img_size / REFERENCE_IMG_SIZE) ** 2 * 3.0 / nl
    return scaled


@dataclass
class _Terms:
    """Unweighted sums of one call: box, objectness (balanced), class."""

    box: torch.Tensor
    obj: torch.Tensor
    cls: torch.Tensor


class YOLOv7Loss:
    """The YOLOv7 loss for one detection head; call it as ``loss_fn(outputs, targets, imgs)``.

    Args:
        head: The ``Detect`` / ``IDetect`` / ``IAuxDetect`` module (``nl, na, nc, anchors, stride``).
            Read at every call, so moving the model to another device is fine.
        hyp: Hyper-parameters as written in the yaml (see ``scale_hyp_for_model``).
        gr: Objectness target mix: ``(1 - gr) + gr * CIoU`` (the model's ``gr``, 1.0 in YOLOv7).
        ota: Use OTA assignment instead of the plain shape-ratio assignment.
        aux: Also train the auxiliary maps (``outputs[nl:]``) with the lead-guided assignment.
        img_size: Training image size for the objectness gain; ``None`` takes the larger side
            of the first batch's images (YOLOv7 trains on square ``img_size`` batches).
    """

    def __init__(self, head: nn.Module, hyp: dict, *, gr: float = 1.0, ota: bool = True, aux: bool = False,
                 img_size: int | None = None) -> None:
        self.head, self.hyp, self.gr = head, dict(hyp), float(gr)
        self.ota, self.aux = ota or aux, aux
        self.nl, self.nc = int(head.nl), int(head.nc)
        self.balance = objectness_balance(self.nl)
        smoothing = float(hyp.get("label_smoothing", 0.0))
        self.cls_positive, self.cls_negative = 1.0 - 0.5 * smoothing, 0.5 * smoothing
        self.gains: dict | None = None
        if img_size is not None:
            self.gains = scale_hyp_for_model(hyp, self.nc, self.nl, img_size)

    def __call__(self, outputs: Any, targets: torch.Tensor,
                 imgs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(loss * batch_size, torch.stack([box, obj, cls]).detach())``.

        Args:
            outputs: Train-mode output (list of ``[B, na, ny, nx, no]``; ``2 * nl`` maps for
                ``IAuxDetect``, lead first). An eval-mode ``(pred, maps)`` tuple is accepted and
                its maps used (then only the lead head is scored).
            targets: ``[M, 6]`` = (image, class, cx, cy, w, h), boxes normalised to 0..1.
            imgs: The input batch; only its size is used (derived from the maps when ``None``).
        """
        maps = self._maps(outputs)
        targets = self._check_targets(targets, maps[0])
        image_hw = tuple(imgs.shape[-2:]) if imgs is not None else self._input_hw(maps[0])
        gains = self._gains(image_hw)
        terms = self._head_terms(maps, targets, image_hw)
        box, obj, cls = gains["box"] * terms.box, gains["obj"] * terms.obj, gains["cls"] * terms.cls
        batch_size = maps[0].shape[0]
        return (box + obj + cls) * batch_size, torch.stack((box, obj, cls)).detach()

    # -- assignment and per-level terms -----------------------------------------------
    def _head_terms(self, maps: list[torch.Tensor], targets: torch.Tensor, image_hw: tuple[int, int]) -> _Terms:
        lead = maps[: self.nl]
        terms = self._terms(lead, targets, self._assign(lead, targets, image_hw, LEAD_BIAS))
        if self.aux and len(maps) == 2 * self.nl:
            aux = self._terms(maps[self.nl:], targets, self._assign(lead, targets, image_hw, AUX_BIAS))
            terms = _Terms(terms.box + AUX_WEIGHT * aux.box, terms.obj + AUX_WEIGHT * aux.obj,
                           terms.cls + AUX_WEIGHT * aux.cls)
        return terms

    def _assign(self, lead: list[torch.Tensor], targets: torch.Tensor, image_hw: tuple[int, int],
                bias: float) -> Assignment:
        """Positives for one head. Auxiliary positives are matched on the lead predictions."""
        anchors = self.head.anchors.detach()
        candidates = find_candidates(grid_sizes(lead), targets, anchors, float(self.hyp["anchor_t"]), bias)
        if not self.ota or len(candidates) == 0:
            return candidates
        topk = AUX_OTA_TOPK_IOU if self.aux else OTA_TOPK_IOU
        return ota_assign(lead, targets, candidates, anchors, self._strides(lead[0]), image_hw, topk)

    def _terms(self, maps: list[torch.Tensor], targets: torch.Tensor, positives: Assignment) -> _Terms:
        zero = maps[0].new_zeros((), dtype=torch.float32)
        box, obj, cls = zero, zero, zero
        anchors = self.head.anchors.detach().to(maps[0].device)
        sizes = grid_sizes(maps)
        for i, p in enumerate(maps):
            pos = positives.at_level(i)
            obj_target = torch.zeros_like(p[..., 4], dtype=torch.float32)
            if len(pos):
                raw = p[pos.image, pos.anchor, pos.gj, pos.gi]
                ciou = bbox_ciou(decode_boxes(raw[:, :4], pos, anchors), target_boxes(targets, pos, sizes))
                box = box + (1.0 - ciou).mean()
                obj_target[pos.image, pos.anchor, pos.gj, pos.gi] = (1.0 - self.gr) + self.gr * ciou.detach().clamp(0)
                cls = cls + self._class_term(raw[:, 5:], targets[pos.target, 1].long())
            obj = obj + self.balance[i] * self._bce(p[..., 4], obj_target, "obj_pw")
        return _Terms(box, obj, cls)

    def _class_term(self, logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        if self.nc <= 1:  # a single class is fully described by objectness
            return logits.new_zeros((), dtype=torch.float32)
        t = torch.full_like(logits, self.cls_negative, dtype=torch.float32)
        t[torch.arange(len(classes), device=t.device), classes] = self.cls_positive
        return self._bce(logits, t, "cls_pw")

    def _bce(self, logits: torch.Tensor, target: torch.Tensor, pos_weight_key: str) -> torch.Tensor:
        """Mean BCE-with-logits with the hyp's positive weight; focal when ``fl_gamma > 0``."""
        pos_weight = torch.tensor(float(self.hyp[pos_weight_key]), device=logits.device)
        loss = F.binary_cross_entropy_with_logits(logits.float(), target, pos_weight=pos_weight, reduction="none")
        gamma = float(self.hyp.get("fl_gamma", 0.0))
        if gamma > 0:  # focal loss (Lin et al.), alpha 0.25, as YOLOv7's FocalLoss wrapper
            prob = logits.float().sigmoid()
            p_t = target * prob + (1 - target) * (1 - prob)
            loss = loss * (target * 0.25 + (1 - target) * 0.75) * (1.0 - p_t) ** gamma
        return loss.mean()

    # -- inputs -------------------------------------------------------------------------
    def _maps(self, outputs: Any) -> list[torch.Tensor]:
        if isinstance(outputs, tuple) and len(outputs) == 2 and isinstance(outputs[1], (list, tuple)):
            outputs = outputs[1]  # eval-mode (pred, maps)
        maps = list(outputs)
        expected = (self.nl, 2 * self.nl) if self.aux else (self.nl,)
        if len(maps) not in expected or any(m.dim() != 5 for m in maps):
            counts = " or ".join(map(str, expected))
            raise ValueError(f"the YOLOv7 loss expects the train-mode output: a list of {counts} maps "
                             f"[B, na, ny, nx, no]; got {len(maps)} items. Call model.train() before the "
                             f"forward pass and pass its output unchanged")
        return maps

    def _check_targets(self, targets: torch.Tensor, first_map: torch.Tensor) -> torch.Tensor:
        if targets.dim() != 2 or targets.shape[1] != 6:
            raise ValueError(f"targets must be [M, 6] = (image, class, cx, cy, w, h), got shape {tuple(targets.shape)}")
        targets = targets.to(first_map.device)
        if len(targets) and int(targets[:, 1].max()) >= self.nc:
            raise ValueError(f"a target has class {int(targets[:, 1].max())} but the model has nc={self.nc}; "
                             f"check the dataset's class mapping or build the model with the right nc")
        return targets

    def _strides(self, first_map: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.head.stride, dtype=torch.float32, device=first_map.device).reshape(-1)

    def _input_hw(self, first_map: torch.Tensor) -> tuple[int, int]:
        stride = float(self._strides(first_map)[0])
        return int(first_map.shape[2] * stride), int(first_map.shape[3] * stride)

    def _gains(self, image_hw: tuple[int, int]) -> dict:
        if self.gains is None:  # fixed from the first batch, like train.py's fixed img_size
            self.gains = scale_hyp_for_model(self.hyp, self.nc, self.nl, max(image_hw))
        return self.gains


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper (or itself)."""
    return model.module if isinstance(getattr(model, "module", None), nn.Module) else model


def detection_head(model: nn.Module) -> nn.Module:
    """``model.model[-1]``, the YOLOv7 head, with a helpful error when it is not one."""
    model = unwrap_model(model)
    layers = getattr(model, "model", None)
    head = layers[-1] if isinstance(layers, (nn.Sequential, nn.ModuleList)) and len(layers) else None
    if head is None or not all(hasattr(head, a) for a in ("nl", "na", "nc", "anchors", "stride")):
        raise TypeError(f"{type(model).__name__} is not a YOLOv7 model: expected model.model[-1] to be a "
                        f"Detect/IDetect/IAuxDetect head with nl, na, nc, anchors and stride")
    return head


def has_aux_head(head: nn.Module) -> bool:
    """True for ``IAuxDetect`` (lead and auxiliary maps in train mode)."""
    return type(head).__name__ == "IAuxDetect" or hasattr(head, "m2")


def build_yolov7_loss(model: nn.Module, hyp: dict, *, img_size: int | None = None) -> YOLOv7Loss:
    """The loss official YOLOv7 training would use for ``model`` under ``hyp``.

    ``IAuxDetect`` head -> lead + auxiliary OTA (``train_aux.py``); otherwise OTA when
    ``hyp.get('loss_ota', 1) == 1`` (``train.py``), else the plain shape-ratio loss.

    Args:
        model: A ``models.yolo.Model`` (possibly pruned, possibly DDP-wrapped).
        hyp: Hyper-parameters as written in the yaml (``load_hyp``); gains are scaled here.
        img_size: Training image size; ``None`` takes it from the first batch.

    Returns:
        ``loss_fn(outputs, targets, imgs) -> (loss * batch_size, [box, obj, cls])``.
    """
    missing = [k for k in LOSS_KEYS if k not in hyp]
    if missing:
        raise KeyError(missing_keys_message(missing, "the YOLOv7 loss"))
    head = detection_head(model)
    gr = getattr(unwrap_model(model), "gr", None)
    aux = has_aux_head(head)
    ota = aux or int(hyp.get("loss_ota", 1)) == 1
    return YOLOv7Loss(head, hyp, gr=1.0 if gr is None else float(gr), ota=ota, aux=aux, img_size=img_size)
