"""yolo-prune: make trained YOLO detectors smaller and faster by channel pruning.

Public API: ``load``, ``prune``, ``save``, ``finetune``, ``evaluate``, ``benchmark``
(see ``yolo_prune.api``). Imported lazily so that ``import yolo_prune`` stays cheap.
"""
from __future__ import annotations

import sys
import types
from typing import Any

__version__ = "0.1.0"
__all__ = ["benchmark", "evaluate", "finetune", "load", "prune", "save"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from yolo_prune import api

        return getattr(api, name)
    raise AttributeError(f"module 'yolo_prune' has no attribute {name!r}")


class _Package(types.ModuleType):
    """Keeps the API's names for the API's functions.

    Importing a subpackage binds its name on the parent package: ``import yolo_prune.benchmark``
    (as every job does) would make ``yolo_prune.benchmark`` that subpackage instead of the API's
    ``benchmark`` function. The subpackage stays importable by its full name (``sys.modules``).
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in __all__ and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
