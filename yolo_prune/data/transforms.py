"""Letterbox resizing and its exact inverse, plus the box conversions used around them.

Boxes are ``[..., 4]`` numpy arrays or torch tensors; every function returns the same type
and never changes its input. Shapes are ``(height, width)``; ratios ``(ratio_h, ratio_w)``;
pads ``(pad_w, pad_h)`` (left and top borders in pixels), as in the dataset's ``shapes``.
"""
from __future__ import annotations

from typing import TypeVar

import cv2
import numpy as np
import torch

from yolo_prune.settings import IMG_SIZE

Boxes = TypeVar("Boxes", np.ndarray, torch.Tensor)
LETTERBOX_COLOR = (114, 114, 114)  # YOLOv7's grey border


def _copy(boxes: Boxes) -> Boxes:
    return boxes.clone() if isinstance(boxes, torch.Tensor) else np.array(boxes, dtype=np.float32, copy=True)


def xyxy_to_cxcywh(boxes: Boxes) -> Boxes:
    """(x1, y1, x2, y2) -> (cx, cy, w, h)."""
    out = _copy(boxes)
    out[..., 0] = (boxes[..., 0] + boxes[..., 2]) / 2
    out[..., 1] = (boxes[..., 1] + boxes[..., 3]) / 2
    out[..., 2] = boxes[..., 2] - boxes[..., 0]
    out[..., 3] = boxes[..., 3] - boxes[..., 1]
    return out


def cxcywh_to_xyxy(boxes: Boxes) -> Boxes:
    """(cx, cy, w, h) -> (x1, y1, x2, y2)."""
    out = _copy(boxes)
    out[..., 0] = boxes[..., 0] - boxes[..., 2] / 2
    out[..., 1] = boxes[..., 1] - boxes[..., 3] / 2
    out[..., 2] = boxes[..., 0] + boxes[..., 2] / 2
    out[..., 3] = boxes[..., 1] + boxes[..., 3] / 2
    return out


def clip_boxes(boxes: Boxes, shape: tuple[int, int]) -> Boxes:
    """Clips xyxy boxes to an image of ``shape`` (h, w)."""
    h, w = shape
    out = _copy(boxes)
    if isinstance(out, torch.Tensor):
        out[..., [0, 2]] = out[..., [0, 2]].clamp(0, w)
        out[..., [1, 3]] = out[..., [1, 3]].clamp(0, h)
    else:
        out[..., [0, 2]] = out[..., [0, 2]].clip(0, w)
        out[..., [1, 3]] = out[..., [1, 3]].clip(0, h)
    return out


def letterbox(img: np.ndarray, new_shape: int | tuple[int, int] = IMG_SIZE, *, auto: bool = False,
              scaleup: bool = True, stride: int = 32, color: tuple[int, int, int] = LETTERBOX_COLOR
              ) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """Resizes keeping the aspect ratio, then pads to ``new_shape`` (h, w).

    Args:
        img: HWC image.
        new_shape: Target (h, w), or one int for a square.
        auto: Pad only up to the next multiple of ``stride`` (minimum rectangle) instead of
            to ``new_shape``.
        scaleup: Allow enlarging; False only shrinks (YOLOv7 evaluation).
        stride: The model's largest stride.
        color: Border colour.

    Returns:
        The image, ``(ratio_h, ratio_w)`` actually applied (after rounding the size), and
        ``(pad_w, pad_h)``: the integer left and top borders. ``map_boxes`` / ``scale_boxes``
        with these two are exact inverses.
    """
    h0, w0 = img.shape[:2]
    new_h, new_w = (new_shape, new_shape) if isinstance(new_shape, int) else new_shape
    r = min(new_h / h0, new_w / w0)
    if not scaleup:
        r = min(r, 1.0)
    w, h = max(1, int(round(w0 * r))), max(1, int(round(h0 * r)))
    dw, dh = new_w - w, new_h - h
    if auto:
        dw, dh = dw % stride, dh % stride
    if (w, h) != (w0, h0):
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    left, top = dw // 2, dh // 2
    img = cv2.copyMakeBorder(img, top, dh - top, left, dw - left, cv2.BORDER_CONSTANT, value=color)
    return img, (h / h0, w / w0), (float(left), float(top))


def map_boxes(boxes: Boxes, ratio: tuple[float, float], pad: tuple[float, float]) -> Boxes:
    """Original-image xyxy -> letterboxed xyxy (``ratio`` (h, w), ``pad`` (w, h))."""
    out = _copy(boxes)
    out[..., [0, 2]] = boxes[..., [0, 2]] * ratio[1] + pad[0]
    out[..., [1, 3]] = boxes[..., [1, 3]] * ratio[0] + pad[1]
    return out


def scale_boxes(boxes: Boxes, img_shape: tuple[int, int], orig_shape: tuple[int, int],
                ratio_pad: tuple[tuple[float, float], tuple[float, float]] | None = None) -> Boxes:
    """Letterboxed xyxy -> original-image xyxy, clipped to ``orig_shape``.

    Args:
        boxes: Boxes in the letterboxed image of size ``img_shape`` (h, w).
        img_shape: Letterboxed image (h, w).
        orig_shape: Original image (h0, w0).
        ratio_pad: ``((ratio_h, ratio_w), (pad_w, pad_h))`` from the dataset's ``shapes``;
            when None they are computed as a centred ``letterbox`` would (YOLOv7 style).
    """
    if ratio_pad is None:
        gain = min(img_shape[0] / orig_shape[0], img_shape[1] / orig_shape[1])
        ratio = (gain, gain)
        pad = ((img_shape[1] - round(orig_shape[1] * gain)) // 2, (img_shape[0] - round(orig_shape[0] * gain)) // 2)
    else:
        ratio, pad = ratio_pad
    out = _copy(boxes)
    out[..., [0, 2]] = (boxes[..., [0, 2]] - pad[0]) / ratio[1]
    out[..., [1, 3]] = (boxes[..., [1, 3]] - pad[1]) / ratio[0]
    return clip_boxes(out, orig_shape)
