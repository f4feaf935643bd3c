"""Images in, network input out: reading files and letterboxing frames for a deployed detector."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from yolo_prune.data.transforms import letterbox


def read_image(path: str | Path) -> np.ndarray:
    """A BGR uint8 image; ``ValueError`` naming the file when OpenCV cannot decode it."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot read image {path}; is it a valid image file?")
    return img


def preprocess(frames: Sequence[np.ndarray], img_size: int) -> tuple[np.ndarray, list[Any]]:
    """BGR frames -> (float RGB ``[B, 3, img_size, img_size]`` in 0..1, each frame's (ratio, pad))."""
    boxed = [letterbox(f, img_size, auto=False) for f in frames]
    x = np.stack([img[:, :, ::-1].transpose(2, 0, 1) for img, _, _ in boxed]).astype(np.float32) / 255.0
    return np.ascontiguousarray(x), [(ratio, pad) for _, ratio, pad in boxed]
