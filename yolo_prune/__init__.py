"""yolo-prune: make trained YOLO detectors smaller and faster by channel pruning.

Public API: ``load``, ``prune``, ``save``, ``finetune``, ``evaluate``, ``benchmark``
(see ``yolo_prune.api``). Imported lazily so that ``import yolo_prune`` stays cheap.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["benchmark", "evaluate", "finetune", "load", "prune", "save"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from yolo_prune import api

        return getattr(api, name)
    raise AttributeError(f"module 'yolo_prune' has no attribute {name!r}")
