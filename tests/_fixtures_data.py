"""Helpers for the data / evaluation / benchmark tests: tiny COCO sets and an exact detector.

The detector's boxes are exact, so the whole evaluation pipeline can be checked against known answers.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]

# class index -> (COCO id, BGR colour); ids are non-contiguous on purpose
BOX_CLASSES = ((2, (0, 0, 255)), (5, (0, 255, 0)), (9, (255, 0, 0)))
BACKGROUND = 40


def write_coco(path: Path, images: list[dict], annotations: list[dict],
               categories: list[dict] | None = None) -> Path:
    cats = categories if categories is not None else [{"id": cid, "name": f"c{cid}"} for cid, _ in BOX_CLASSES]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": cats}))
    return path


def write_box_dataset(root: Path, *, sizes: tuple[tuple[int, int], ...] = ((96, 128), (128, 96), (128, 128), (96, 128)),
                      crowd: bool = True) -> tuple[Path, Path]:
    """Images (h, w) with one solid box per colour class at even coordinates.

    Plus one image without objects and (optionally) a crowd box; PNG so pixels are exact.

    Returns ``(images_dir, ann_file)``.
    """
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images, anns = [], []
    for k, (h, w) in enumerate(sizes + ((96, 128),)):
        image_id = 10 * (k + 1)  # non-contiguous image ids too
        img = np.full((h, w, 3), BACKGROUND, np.uint8)
        present = [] if k == len(sizes) else list(range(len(BOX_CLASSES)))[: 1 + k % 3]
        for cls in present:
            bw, bh = 2 * int(rng.integers(6, 15)), 2 * int(rng.integers(6, 15))
            band = w // 3  # each class in its own vertical band: boxes never overlap
            x = cls * band + 2 * int(rng.integers(0, (band - bw) // 2 + 1))
            y = 2 * int(rng.integers(0, (h - bh) // 2))
            img[y:y + bh, x:x + bw] = BOX_CLASSES[cls][1]
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": BOX_CLASSES[cls][0],
                         "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": 0})
        name = f"img_{image_id}.png"
        cv2.imwrite(str(images_dir / name), img)
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
    if crowd:  # a crowd region on the first image where nothing is drawn: ignored by COCOeval
        anns.append({"id": len(anns) + 1, "image_id": 10, "category_id": 5, "bbox": [0, 80, 20, 14],
                     "area": 280, "iscrowd": 1})
    return images_dir, write_coco(root / "instances.json", images, anns)


class OracleDetector(nn.Module):
    """Finds each colour class's box in the input by thresholding: exact boxes, YOLOv7 eval layout.

    Output ``(pred [B, nc, 5 + nc], None)``: one candidate per class, objectness 0.9 where the
    colour is present (0 elsewhere). ``jitter`` shifts boxes by a fixed pattern of pixels.
    """

    def __init__(self, nc: int = len(BOX_CLASSES), jitter: float = 0.0) -> None:
        super().__init__()
        self.nc, self.jitter = nc, jitter
        self.scale = nn.Parameter(torch.ones(1))  # something for .to() / .half() to move

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        b = x.shape[0]
        pred = torch.zeros(b, self.nc, 5 + self.nc, dtype=x.dtype, device=x.device)
        for cls in range(min(self.nc, len(BOX_CLASSES))):
            channel = 2 - BOX_CLASSES[cls][1].index(255)  # the BGR colour's channel in the RGB input
            others = [c for c in range(3) if c != channel]
            mask = (x[:, channel] > 0.9) & (x[:, others] < 0.1).all(1)
            for i in range(b):
                ys, xs = torch.nonzero(mask[i], as_tuple=True)
                if len(xs):
                    x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
                    shift = self.jitter * (cls + 1)
                    pred[i, cls, :4] = torch.stack([(x1 + x2) / 2 + shift, (y1 + y2) / 2, x2 - x1, y2 - y1]).to(x.dtype)
                    pred[i, cls, 4] = 0.9
                    pred[i, cls, 5 + cls] = 1.0
        return pred * self.scale, None


def random_gt_and_detections(seed: int, *, n_images: int = 8, category_ids: tuple[int, ...] = (2, 7, 11),
                             crowd: bool = True, empty_gt: bool = False) -> tuple[dict[str, Any], list[dict]]:
    """A random COCO ground truth and noisy detections of it (jittered boxes, misses, false positives)."""
    rng = np.random.default_rng(seed)
    images = [{"id": 100 + i, "file_name": f"{i}.jpg", "width": 200, "height": 160} for i in range(n_images)]
    anns, dets = [], []
    for img in images[:-1]:  # the last image has no objects
        for _ in range(0 if empty_gt else int(rng.integers(1, 6))):
            w, h = rng.uniform(6, 120), rng.uniform(6, 100)
            x, y = rng.uniform(0, 200 - w), rng.uniform(0, 160 - h)
            cat = int(rng.choice(category_ids))
            is_crowd = int(crowd and rng.random() < 0.15)
            anns.append({"id": len(anns) + 1, "image_id": img["id"], "category_id": cat, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": is_crowd})
            if rng.random() < 0.8:
                jit = rng.normal(0, 0.08, 4) * [w, h, w, h]
                dets.append({"image_id": img["id"], "category_id": cat, "score": float(rng.uniform(0.2, 1.0)),
                             "bbox": [x + jit[0], y + jit[1], max(1.0, w + jit[2]), max(1.0, h + jit[3])]})
    for _ in range(3 * n_images):  # false positives
        img = images[int(rng.integers(0, n_images))]
        w, h = rng.uniform(5, 80), rng.uniform(5, 80)
        dets.append({"image_id": img["id"], "category_id": int(rng.choice(category_ids)),
                     "score": float(rng.uniform(0.0, 0.6)),
                     "bbox": [rng.uniform(0, 200 - w), rng.uniform(0, 160 - h), w, h]})
    cats = [{"id": c, "name": f"class{c}"} for c in category_ids]
    return {"images": images, "annotations": anns, "categories": cats}, dets


def load_script(name: str) -> ModuleType:
    """Imports ``scripts/<name>.py`` as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"_script_{name}", REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
