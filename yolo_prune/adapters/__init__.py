"""Detector families, one module each, registered by name in ``ADAPTERS``."""
import importlib
import importlib.util

from yolo_prune.adapters.base import ADAPTERS, DetectorAdapter, LoadedModel, adapter_for_model, get_adapter

# Importing a family's module registers it. Keep this tuple in sync with the files here.
_FAMILIES = ("yolov7", "ultralytics")
for _family in _FAMILIES:
    if importlib.util.find_spec(f"yolo_prune.adapters.{_family}") is not None:  # TEMP while families land
        importlib.import_module(f"yolo_prune.adapters.{_family}")

__all__ = ["ADAPTERS", "DetectorAdapter", "LoadedModel", "adapter_for_model", "get_adapter"]
