"""Ultralytics detectors (YOLOv3u / v5u / v6 / v8 / v10 / YOLO11 / YOLO26), ``ultralytics`` package.

* ``adapter``: ``UltralyticsAdapter`` (registered as ``"ultralytics"``), the pruning facts;
* ``blocks``: split-free rewrites of the blocks torch-pruning cannot trace;
* ``checkpoint``: Ultralytics' checkpoint dict, its restricted loader;
* ``trainer``: ``PrunedDetectionTrainer``, Ultralytics' trainer for a model that must not be rebuilt,
  and ``coco_to_yolo`` (this project's COCO-json data in the YOLO txt layout it reads).

Importing this package does not import ``ultralytics`` (seconds); the adapter does on first use.
"""
from yolo_prune.adapters.ultralytics.adapter import UltralyticsAdapter

__all__ = ["UltralyticsAdapter"]
