"""Training augmentations with YOLOv7's hyper-parameter names (numpy + OpenCV).

Images are HWC uint8 BGR; labels are float32 ``[n, 5]`` = (class, x1, y1, x2, y2) in pixels of
the image they come with. Randomness comes from Python's ``random`` module, which the training
loop seeds per epoch and ``build_dataloader`` seeds per worker.

Hyper-parameters (``AUGMENT_DEFAULTS`` holds the defaults, YOLOv7-tiny's ``hyp.scratch.tiny``):
``hsv_h, hsv_s, hsv_v`` colour gains; ``degrees`` rotation; ``translate`` fraction of the size;
``scale`` zoom gain; ``shear`` degrees; ``perspective``; ``flipud, fliplr`` probabilities;
``mosaic`` probability of a 4-image mosaic; ``mixup`` probability of blending two mosaics.
"""
from __future__ import annotations

import math
import random
from typing import Sequence

import cv2
import numpy as np

from yolo_prune.data.transforms import LETTERBOX_COLOR

AUGMENT_DEFAULTS: dict[str, float] = {
    "hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4, "degrees": 0.0, "translate": 0.1, "scale": 0.5,
    "shear": 0.0, "perspective": 0.0, "flipud": 0.0, "fliplr": 0.5, "mosaic": 1.0, "mixup": 0.05,
}
# YOLOv7 hyp keys that this implementation does not apply (warned about when non-zero).
UNSUPPORTED_KEYS = ("copy_paste", "paste_in")


def augment_hsv(img: np.ndarray, hgain: float, sgain: float, vgain: float) -> np.ndarray:
    """Random hue/saturation/value gains through look-up tables (returns a new image)."""
    if not (hgain or sgain or vgain):
        return img
    gains = np.random.default_rng(random.getrandbits(32)).uniform(-1, 1, 3) * [hgain, sgain, vgain] + 1
    hue, sat, val = cv2.split(cv2.cvtColor(img, cv2.COLOR_BGR2HSV))
    x = np.arange(256, dtype=np.float32)
    lut_hue = ((x * gains[0]) % 180).astype(np.uint8)  # OpenCV hue spans 0..179
    lut_sat = np.clip(x * gains[1], 0, 255).astype(np.uint8)
    lut_val = np.clip(x * gains[2], 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat), cv2.LUT(val, lut_val)))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def _affine_matrix(shape: tuple[int, int], out_shape: tuple[int, int], hyp: dict[str, float]) -> np.ndarray:
    """Centre -> perspective -> rotate+scale -> shear -> translate (3x3)."""
    h, w = shape
    out_h, out_w = out_shape
    centre = np.eye(3)
    centre[0, 2], centre[1, 2] = -w / 2, -h / 2
    persp = np.eye(3)
    persp[2, 0] = random.uniform(-hyp["perspective"], hyp["perspective"])
    persp[2, 1] = random.uniform(-hyp["perspective"], hyp["perspective"])
    rot = np.eye(3)
    angle = random.uniform(-hyp["degrees"], hyp["degrees"])
    scale = random.uniform(1 - hyp["scale"], 1 + hyp["scale"])
    rot[:2] = cv2.getRotationMatrix2D((0, 0), angle, scale)
    shear = np.eye(3)
    shear[0, 1] = math.tan(math.radians(random.uniform(-hyp["shear"], hyp["shear"])))
    shear[1, 0] = math.tan(math.radians(random.uniform(-hyp["shear"], hyp["shear"])))
    move = np.eye(3)
    move[0, 2] = random.uniform(0.5 - hyp["translate"], 0.5 + hyp["translate"]) * out_w
    move[1, 2] = random.uniform(0.5 - hyp["translate"], 0.5 + hyp["translate"]) * out_h
    return move @ shear @ rot @ persp @ centre


def random_perspective(img: np.ndarray, labels: np.ndarray, hyp: dict[str, float],
                       out_shape: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Random rotation, scale, shear, translation and perspective of an image and its boxes.

    Args:
        img: HWC image.
        labels: ``[n, 5]`` (class, x1, y1, x2, y2) pixels.
        hyp: Needs ``degrees, translate, scale, shear, perspective``.
        out_shape: Output (h, w); the input shape when None (a mosaic passes half its size).

    Returns:
        The warped image and the surviving labels (boxes clipped, tiny or squashed ones dropped).
    """
    out_h, out_w = out_shape or img.shape[:2]
    matrix = _affine_matrix(img.shape[:2], (out_h, out_w), hyp)
    if hyp["perspective"]:
        img = cv2.warpPerspective(img, matrix, dsize=(out_w, out_h), borderValue=LETTERBOX_COLOR)
    else:
        img = cv2.warpAffine(img, matrix[:2], dsize=(out_w, out_h), borderValue=LETTERBOX_COLOR)
    if not len(labels):
        return img, labels
    boxes = _warp_boxes(labels[:, 1:5], matrix, (out_h, out_w))
    keep = _box_candidates(labels[:, 1:5], boxes, scale=math.sqrt(abs(np.linalg.det(matrix[:2, :2]))))
    out = labels[keep].copy()
    out[:, 1:5] = boxes[keep]
    return img, out


def _warp_boxes(boxes: np.ndarray, matrix: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Warps the 4 corners of each box; the new box encloses them, clipped to ``shape``."""
    n = len(boxes)
    corners = np.ones((n * 4, 3))
    corners[:, :2] = boxes[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(n * 4, 2)  # x1y1, x2y2, x1y2, x2y1
    warped = corners @ matrix.T
    warped = warped[:, :2] / warped[:, 2:3] if matrix[2, 0] or matrix[2, 1] else warped[:, :2]
    xs, ys = warped[:, 0].reshape(n, 4), warped[:, 1].reshape(n, 4)
    out = np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], axis=1)
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, shape[1])
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, shape[0])
    return out.astype(np.float32)


def _box_candidates(before: np.ndarray, after: np.ndarray, scale: float, wh_thr: float = 2,
                    ar_thr: float = 20, area_thr: float = 0.1, eps: float = 1e-16) -> np.ndarray:
    """The boxes that survive an affine warp.

    They stay > ``wh_thr`` px, keep > ``area_thr`` of their (scaled) area and are not squashed
    beyond aspect ratio ``ar_thr``.
    """
    w1, h1 = (before[:, 2] - before[:, 0]) * scale, (before[:, 3] - before[:, 1]) * scale
    w2, h2 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    aspect = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (aspect < ar_thr)


def mosaic4(tiles: Sequence[tuple[np.ndarray, np.ndarray]], size: int, hyp: dict[str, float]
            ) -> tuple[np.ndarray, np.ndarray]:
    """Four images around a random centre on a ``2 size`` canvas, then a random affine to ``size``.

    Args:
        tiles: Four ``(img, labels)``; each image's long side is ``size``.
        size: Output side length.
        hyp: Affine hyper-parameters (see ``random_perspective``).
    """
    canvas = np.full((2 * size, 2 * size, 3), LETTERBOX_COLOR[0], dtype=np.uint8)
    yc, xc = (int(random.uniform(size / 2, 3 * size / 2)) for _ in range(2))
    all_labels = []
    for k, (img, labels) in enumerate(tiles):
        h, w = img.shape[:2]
        # where the tile lands on the canvas (a) and which part of the tile is used (b)
        if k == 0:    # top left
            a = (max(xc - w, 0), max(yc - h, 0), xc, yc)
            b = (w - (a[2] - a[0]), h - (a[3] - a[1]), w, h)
        elif k == 1:  # top right
            a = (xc, max(yc - h, 0), min(xc + w, 2 * size), yc)
            b = (0, h - (a[3] - a[1]), a[2] - a[0], h)
        elif k == 2:  # bottom left
            a = (max(xc - w, 0), yc, xc, min(2 * size, yc + h))
            b = (w - (a[2] - a[0]), 0, w, a[3] - a[1])
        else:         # bottom right
            a = (xc, yc, min(xc + w, 2 * size), min(2 * size, yc + h))
            b = (0, 0, a[2] - a[0], a[3] - a[1])
        canvas[a[1]:a[3], a[0]:a[2]] = img[b[1]:b[3], b[0]:b[2]]
        shifted = labels.copy()
        shifted[:, [1, 3]] += a[0] - b[0]
        shifted[:, [2, 4]] += a[1] - b[1]
        all_labels.append(shifted)
    merged = np.concatenate(all_labels, 0) if all_labels else np.zeros((0, 5), np.float32)
    merged[:, 1:5] = merged[:, 1:5].clip(0, 2 * size)
    # the affine's translation is relative to the output, so the canvas centre region is what stays
    return random_perspective(canvas, merged, hyp, out_shape=(size, size))


def mixup(img: np.ndarray, labels: np.ndarray, img2: np.ndarray, labels2: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray]:
    """Blends two same-size images with a Beta(8, 8) ratio and keeps both label sets."""
    r = np.random.default_rng(random.getrandbits(32)).beta(8.0, 8.0)
    blended = (img.astype(np.float32) * r + img2.astype(np.float32) * (1 - r)).astype(np.uint8)
    return blended, np.concatenate((labels, labels2), 0)


def random_flips(img: np.ndarray, labels: np.ndarray, flipud: float, fliplr: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Vertical / horizontal flips with the given probabilities."""
    h, w = img.shape[:2]
    labels = labels.copy()
    if random.random() < flipud:
        img = np.flipud(img)
        labels[:, [2, 4]] = h - labels[:, [4, 2]]
    if random.random() < fliplr:
        img = np.fliplr(img)
        labels[:, [1, 3]] = w - labels[:, [3, 1]]
    return np.ascontiguousarray(img), labels
