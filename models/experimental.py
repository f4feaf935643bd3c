"""``attempt_load`` at the official import path, backed by the safe checkpoint loader."""
from __future__ import annotations

from pathlib import Path

import torch

from models.yolo import Model


def attempt_load(weights: str | Path, map_location: str | torch.device | None = None, *, fuse: bool = True,
                 trust: bool = False) -> Model:
    """Loads one YOLOv7 checkpoint as a float32 eval model, fused like the official function.

    Unlike the official version this refuses pickles that reference anything but the classes
    official checkpoints need (pass ``trust=True`` for a file you trust), and takes one file only
    (ensembles are not supported).

    Args:
        weights: Path of an official-format ``.pt`` file.
        map_location: Device for the tensors (default CPU).
        fuse: Fold Conv+BN, RepConv and implicit terms as the official loader does.
        trust: Allow arbitrary pickled objects (runs code from the file).
    """
    # The one import of ``models`` that reaches up into yolo_prune, and lazily: the safe loader owns
    # the allow-list of the classes defined here (``models`` stays importable on its own).
    from yolo_prune.adapters.yolov7.checkpoint import load_checkpoint

    if isinstance(weights, (list, tuple)):
        raise ValueError(f"attempt_load takes one checkpoint path, got a list of {len(weights)}; "
                         f"ensembles are not supported")
    model = load_checkpoint(weights, trust=trust, map_location=map_location or "cpu").model
    return model.fuse().eval() if fuse else model
