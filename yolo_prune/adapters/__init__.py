"""Detector families, one package each, registered by name in ``ADAPTERS``.

``base`` states the contract; ``loading`` recognises which family a file or cfg belongs to.
"""
# Importing a family's package registers it: one line per family.
from yolo_prune.adapters import (
           ultralytics,  # noqa: E402,F401  (registers "ultralytics"; imports it lazily)
           yolov7,  # noqa: E402,F401,I001  (registers "yolov7")
)
from yolo_prune.adapters.base import ADAPTERS, DetectorAdapter, LoadedModel, adapter_for_model, get_adapter
from yolo_prune.adapters.loading import adapter_for, load_model  # noqa: E402

__all__ = ["ADAPTERS", "DetectorAdapter", "LoadedModel", "adapter_for", "adapter_for_model", "get_adapter",
           "load_model"]
