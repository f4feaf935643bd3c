"""A few real training batches, for criteria that rank channels by loss gradients (Taylor)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch

from yolo_prune.data.dataset import CocoDetectionDataset


def loss_batches(images_dir: str | Path, ann_file: str | Path, *, img_size: int, n_batches: int = 4,
                 batch_size: int = 8, stride: int = 32) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yields ``(images [B, 3, S, S] in 0..1, targets [M, 6])`` from the first images of a split.

    Letterboxed, not augmented, in file order: the same images every call, so a Taylor ranking
    repeats. ``targets`` has the batch index in column 0, as the losses expect.
    """
    dataset = CocoDetectionDataset(images_dir, ann_file, img_size=img_size, stride=stride)
    for start in range(0, min(len(dataset), n_batches * batch_size), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        imgs, targets, _, _ = CocoDetectionDataset.collate_fn(items)
        yield imgs.float() / 255.0, targets


def calibration_batches(data: str | Path, *, img_size: int, n_images: int = 128,
                        batch_size: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``n_images`` train images of a data yaml (all, if it has fewer), letterboxed, for compensation.

    Train, not val: the split that judges a pruned model does not fit its weights.
    """
    from yolo_prune.data.config import load_data_config

    if n_images < 1:
        raise ValueError(f"calibration needs at least one image, got n_images={n_images}")
    cfg = load_data_config(data)
    batches = loss_batches(cfg.train_images, cfg.train_ann, img_size=img_size,
                           n_batches=-(-n_images // batch_size), batch_size=batch_size)
    images = torch.cat([imgs for imgs, _ in batches])[:n_images]
    return [(chunk, torch.zeros(0, 6)) for chunk in images.split(batch_size)]
