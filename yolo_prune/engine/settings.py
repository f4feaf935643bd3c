"""Fine-tuning settings: every default in one place, unknown keys refused with the close match."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from yolo_prune.engine.optim import SCHEDULES
from yolo_prune.registry import unknown_name_message
from yolo_prune.settings import IMG_SIZE, JobSettings


@dataclass
class TrainSettings(JobSettings):
    """Resolved settings of one fine-tuning run (written to ``args.yaml`` and into ``last.pt``).

    Attributes:
        epochs: Total epochs of the run (a resumed run keeps the original total).
        img_size: Square training / validation size in pixels (rounded up to the model stride).
        batch_size: Total batch over all processes; under DDP each rank takes ``batch_size / world``.
        lr_schedule: ``cosine`` (one-cycle) or ``linear`` decay from ``lr0`` to ``lr0 * lrf``.
        nominal_batch: Gradients are accumulated until this many images (YOLOv7: 64).
        warmup_min_iters: Warm-up lasts ``max(warmup_epochs * batches, this)`` iterations
            (only when the hyp's ``warmup_epochs`` > 0; this floor takes at most a third of the run).
        close_mosaic: Turn mosaic off for this many final epochs.
        ema: Keep an exponential moving average of the weights (validated and saved).
        amp: Mixed precision: fp16 on CUDA, bf16 on a CPU with native bf16 (AVX512-BF16 / AMX; 1.4x
            faster yolov7-tiny steps, loss in float32), float32 elsewhere. Weights stay float32.
        channels_last: Train in the NHWC memory layout (steps 1.2x faster for yolov7-tiny on CPU,
            ``scripts/bench_train_variants.py``); checkpoints are written in the standard layout.
        device: ``''`` (CUDA if available), ``cpu``, ``0``, ``cuda:1``.
        workers: Data-loading processes per rank.
        seed: Base seed; each epoch reseeds from it, which makes resume exact.
        val: Validate (mAP on the EMA model) during training.
        val_period: Validate every this many epochs (and always after the last).
        val_max_images: Validate on at most this many images (None: all) for speed.
        val_batch_size: Validation batch (None: twice the per-rank training batch).
        sync_bn: Convert BatchNorm to SyncBatchNorm under DDP (CUDA only).
        max_grad_norm: Clip the gradient norm to this before each step (None: no clipping, as YOLOv7).
        distill_weight: Weight of the knowledge-distillation term when a teacher is given.
    """

    epochs: int = 100
    img_size: int = IMG_SIZE
    batch_size: int = 16
    lr_schedule: str = "cosine"
    nominal_batch: int = 64
    warmup_min_iters: int = 100
    close_mosaic: int = 0
    ema: bool = True
    ema_decay: float = 0.9999
    ema_tau: float = 2000.0
    amp: bool = True
    channels_last: bool = True
    device: str = ""
    workers: int = 8
    seed: int = 0
    val: bool = True
    val_period: int = 1
    val_max_images: int | None = None
    val_batch_size: int | None = None
    sync_bn: bool = False
    max_grad_norm: float | None = None
    distill_weight: float = 1.0

    def __post_init__(self) -> None:
        for name in ("epochs", "img_size", "batch_size", "nominal_batch", "val_period"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_min_iters", "close_mosaic", "workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"lr_schedule {self.lr_schedule!r} is not one of {', '.join(SCHEDULES)}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainSettings":
        """Builds settings from plain values; ``None`` means the default, unknown keys are errors."""
        known = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in known:
                raise TypeError(unknown_name_message("fine-tuning setting", key, known))
        return cls(**{k: v for k, v in values.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        """Plain values (for ``args.yaml`` and ``last.pt``)."""
        return dataclasses.asdict(self)
