"""Fine-tuning engine: the training loop, EMA, optimizer and schedule, checkpoints, DDP.

``finetune(loaded, adapter, data=...)`` and ``resume(run, adapter)`` are the calls most code
needs (the public ``yolo_prune.finetune`` finds the adapter and loads files first); ``Trainer``
is the loop to extend (``TrainerCallbacks`` for hooks). ``finetune`` is imported eagerly so
that the package attribute is always the function, never its module
``yolo_prune.engine.finetune``.
"""
from __future__ import annotations

from yolo_prune.engine.finetune import FinetuneResult, finetune, resume
from yolo_prune.engine.hooks import TrainerCallbacks
from yolo_prune.engine.settings import TrainSettings
from yolo_prune.engine.trainer import Trainer

__all__ = ["FinetuneResult", "Trainer", "TrainerCallbacks", "TrainSettings", "finetune", "resume"]
