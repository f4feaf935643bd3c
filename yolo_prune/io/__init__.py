"""Safe checkpoint loading and atomic saving.

The checkpoint functions are imported lazily: they pull in ``models`` and the adapters,
which must not load merely because some module wants ``atomic_write_json``.
"""
from __future__ import annotations

import importlib
from typing import Any

from yolo_prune.io.atomic import atomic_path, atomic_torch_save, atomic_write_json, atomic_write_text

_LAZY = {
    "CheckpointError": "yolo_prune.io.checkpoint",
    "load_checkpoint": "yolo_prune.io.checkpoint",
    "read_checkpoint": "yolo_prune.io.checkpoint",
    "save_checkpoint": "yolo_prune.io.checkpoint",
}

__all__ = ["atomic_path", "atomic_torch_save", "atomic_write_json", "atomic_write_text", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'yolo_prune.io' has no attribute {name!r}")
