"""Detector families, one module each, registered by name in ``ADAPTERS``."""
from yolo_prune.adapters.base import ADAPTERS, DetectorAdapter, LoadedModel, adapter_for_model, get_adapter

# Importing a family's module registers it: one line per file in this folder.
from yolo_prune.adapters import yolov7  # noqa: E402,F401  (registers "yolov7")
from yolo_prune.adapters import ultralytics  # noqa: E402,F401  (registers "ultralytics"; imports it lazily)

__all__ = ["ADAPTERS", "DetectorAdapter", "LoadedModel", "adapter_for_model", "get_adapter"]
