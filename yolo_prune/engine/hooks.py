"""Trainer hooks: subclass ``TrainerCallbacks`` and override what you need (all are no-ops).

The trainer calls them at fixed points, so behaviour can be added (logging to a service,
early stopping, freezing layers for some epochs) without editing the loop. A hook may raise
to stop the run; checkpoints written before that point stay valid for ``--resume``.

Example:
    >>> class StopAfterOneEpoch(TrainerCallbacks):
    ...     def on_epoch_end(self, trainer, epoch, row):
    ...         raise KeyboardInterrupt  # last.pt of epoch 0 is already on disk
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from yolo_prune.engine.trainer import Trainer


class TrainerCallbacks:
    """Documented no-op hooks of ``Trainer``."""

    def on_train_start(self, trainer: "Trainer") -> None:
        """After set-up (and resume), before the first epoch."""

    def on_epoch_start(self, trainer: "Trainer", epoch: int) -> None:
        """Before the epoch's data loader is built (change ``trainer.train_set`` here)."""

    def on_before_optimizer_step(self, trainer: "Trainer") -> None:
        """After the accumulated backward passes, before ``optimizer.step``.

        Gradients are unscaled here (sparse-training regularisers add their gradient terms here).
        """

    def on_step_end(self, trainer: "Trainer", epoch: int, step: int, loss_items: Any) -> None:
        """After every iteration's backward (and optimizer step, when one was due)."""

    def on_epoch_end(self, trainer: "Trainer", epoch: int, row: dict[str, Any]) -> None:
        """After validation and after ``last.pt`` / ``best.pt`` of this epoch are written."""

    def on_train_end(self, trainer: "Trainer") -> None:
        """After the last epoch (not called when the run is interrupted)."""
