"""yolo-prune: make trained YOLO detectors smaller and faster by channel pruning.

Public API: ``load``, ``prune``, ``save``, ``finetune``, ``evaluate``, ``benchmark``
(see ``yolo_prune.api``). Imported lazily so that ``import yolo_prune`` stays cheap.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "load": "yolo_prune.api",
    "prune": "yolo_prune.api",
    "save": "yolo_prune.api",
    "finetune": "yolo_prune.api",
    "evaluate": "yolo_prune.api",
    "benchmark": "yolo_prune.api",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'yolo_prune' has no attribute {name!r}")
