"""Fine-tuning engine: the training loop, EMA, optimizer and schedule, checkpoints, DDP.

``finetune(...)`` is the one call most users need; ``Trainer`` is the loop to extend
(``TrainerCallbacks`` for hooks). ``finetune`` is imported eagerly so that the package
attribute is always the function, never its module ``yolo_prune.engine.finetune``; the rest
is imported on first use.
"""
from __future__ import annotations

import importlib
from typing import Any

from yolo_prune.engine.finetune import FinetuneResult, finetune

_LAZY = {
    "Trainer": "yolo_prune.engine.trainer",
    "TrainerCallbacks": "yolo_prune.engine.hooks",
    "TrainSettings": "yolo_prune.engine.settings",
    "ModelEMA": "yolo_prune.engine.ema",
    "build_optimizer": "yolo_prune.engine.optim",
    "add_finetune_args": "yolo_prune.engine.cli",
    "run_finetune": "yolo_prune.engine.cli",
}

__all__ = sorted(["FinetuneResult", "finetune", *_LAZY])


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'yolo_prune.engine' has no attribute {name!r}")
