"""The fine-tuning loop: YOLOv7's recipe, for any detector family whose adapter gives a loss.

``Trainer`` owns the model, optimizer, EMA, grad scaler and results log. It knows nothing
about a family: the adapter provides the loss (``adapter.loss(model, hyp)``), the decoding
for validation (``adapter.decode``) and the checkpoint format (``adapter.save``).
"""
from __future__ import annotations

import itertools
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from yolo_prune.devices import autocast_dtype
from yolo_prune.engine import checkpointing
from yolo_prune.engine.distributed import DistInfo, all_reduce_mean, barrier, unwrap_model, wrap_model
from yolo_prune.engine.ema import ModelEMA
from yolo_prune.engine.hooks import TrainerCallbacks
from yolo_prune.engine.optim import (
    accumulate_steps,
    apply_warmup,
    build_optimizer,
    lr_factor,
    scaled_weight_decay,
    set_epoch_lr,
    warmup_iterations,
)
from yolo_prune.engine.plots import ResultsLog, plot_results
from yolo_prune.engine.settings import TrainSettings
from yolo_prune.reporting import progress_off

if TYPE_CHECKING:  # annotations only: the engine takes an adapter, it never imports the families
    from yolo_prune.adapters.base import DetectorAdapter

# (student_outputs, teacher_outputs, imgs) -> (loss scaled like the detection loss, detached item)
DistillFn = Callable[[Any, Any, torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def fitness(metrics: dict[str, float]) -> float:
    """YOLOv7's model-selection score: ``0.1 * mAP50 + 0.9 * mAP50-95``."""
    return 0.1 * float(metrics["map50"]) + 0.9 * float(metrics["map50_95"])


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class RunPaths:
    """Where a run writes: ``weights/last.pt``, ``weights/best.pt``, ``results.csv`` ..."""

    root: Path

    @property
    def last(self) -> Path:
        """``weights/last.pt``: the full training state."""
        return self.root / "weights" / "last.pt"

    @property
    def best(self) -> Path:
        """``weights/best.pt``: the best validated model."""
        return self.root / "weights" / "best.pt"

    @property
    def results_csv(self) -> Path:
        """``results.csv``: one row per epoch."""
        return self.root / "results.csv"

    @property
    def results_png(self) -> Path:
        """``results.png``: the curves of ``results.csv``."""
        return self.root / "results.png"


class Trainer:
    """Fine-tunes ``model`` with SGD, warm-up, cosine/linear lr, EMA, AMP and optional DDP.

    Args:
        model: The float32 model to train (unwrapped; the trainer wraps it for DDP).
        adapter: Its family's adapter (loss, decode, save).
        train_set: Training dataset (``CocoDetectionDataset`` contract: ``collate_fn``, ``mosaic``).
        val_set: Validation dataset, or None to skip validation.
        hyp: Hyper-parameters (lr0, lrf, momentum, weight_decay, warmup_*, loss gains, augmentation).
        settings: Resolved ``TrainSettings``.
        out_dir: Run folder (only rank 0 writes there).
        names: Class names stored in checkpoints.
        device: This rank's device.
        dist_info: This rank's place in a DDP job (default: single process).
        teacher: Frozen model for knowledge distillation, with ``distill_fn``.
        distill_fn: Distillation term (see ``DistillFn``).
        callbacks: Hooks (see ``yolo_prune.engine.hooks``).
        extra_state: Plain values stored in every checkpoint for ``--resume`` (data, weights ...).
        model_meta: ``LoadedModel.meta`` of the model (the adapter may store parts, e.g. ``pruning``).
    """

    def __init__(self, model: nn.Module, adapter: DetectorAdapter, train_set: Any, val_set: Any, *, hyp: dict,
                 settings: TrainSettings, out_dir: str | Path, names: list[str], device: torch.device,
                 dist_info: DistInfo | None = None, teacher: nn.Module | None = None,
                 distill_fn: DistillFn | None = None, callbacks: TrainerCallbacks | None = None,
                 extra_state: dict | None = None, model_meta: dict | None = None) -> None:
        self.adapter, self.train_set, self.val_set = adapter, train_set, val_set
        self.hyp, self.settings, self.names, self.device = dict(hyp), settings, list(names), device
        self.dist = dist_info or DistInfo()
        self.paths = RunPaths(Path(out_dir))
        self.callbacks = callbacks or TrainerCallbacks()
        self.extra_state = dict(extra_state or {})
        self.model_meta = dict(model_meta or {})  # e.g. the pruning record, kept in every checkpoint
        self.teacher, self.distill_fn = teacher, distill_fn
        if settings.batch_size % self.dist.world_size:
            raise ValueError(f"--batch {settings.batch_size} must be a multiple of the {self.dist.world_size} "
                             f"processes so every rank gets the same share")
        self.batch_size = settings.batch_size // self.dist.world_size  # per rank
        self._mosaic = bool(getattr(train_set, "mosaic", False))
        self._build_training_state(model)

    def _build_training_state(self, model: nn.Module) -> None:
        s, hyp = self.settings, self.hyp
        model = model.to(self.device).float().train()
        if s.channels_last:
            nhwc(model)
        for p in model.parameters():
            p.requires_grad_(True)  # fine-tune every layer (a loaded checkpoint may come frozen)
        self.loss_fn = self.adapter.loss(model, hyp)
        self.accumulate = accumulate_steps(s.nominal_batch, s.batch_size)
        weight_decay = scaled_weight_decay(hyp["weight_decay"], s.batch_size, self.accumulate, s.nominal_batch)
        self.optimizer = build_optimizer(model, lr0=hyp["lr0"], momentum=hyp["momentum"], weight_decay=weight_decay,
                                         optimizer=hyp.get("optimizer", "SGD"))
        self.lf = lr_factor(s.lr_schedule, s.epochs, hyp["lrf"])
        self.ema = ModelEMA(model, s.ema_decay, s.ema_tau) if s.ema and self.dist.is_main else None
        self.amp_dtype = autocast_dtype(self.device) if s.amp else None
        self.amp = self.amp_dtype is not None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype is torch.float16)  # bf16 needs none
        self.model = wrap_model(model, self.device, self.dist, sync_bn=s.sync_bn)
        self.start_epoch, self.best_fitness, self.pending, self.warmup_iters = 0, None, 0, 0
        self.best_written = False
        self.log = ResultsLog(self.paths.results_csv)

    # -- resume -------------------------------------------------------------------------
    def restore(self, ckpt: dict) -> None:
        """Continues from a ``last.pt`` dict whose ``model`` is the model this trainer got."""
        self.optimizer.load_state_dict(ckpt["optimizer"])
        state = ckpt[checkpointing.TRAIN_STATE_KEY]
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema = ModelEMA.from_state(ckpt["ema"].to(self.device), ckpt["updates"] or 0,
                                           self.settings.ema_decay, self.settings.ema_tau)
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = int(ckpt["epoch"]) + 1
        self.best_fitness = state.get("best_fitness")
        self.best_written = self.best_fitness is not None and self.paths.best.exists()
        self.log = ResultsLog.from_text(self.paths.results_csv, ckpt.get("training_results"),
                                        up_to_epoch=int(ckpt["epoch"]))

    # -- one iteration ------------------------------------------------------------------
    def run_step(self, batch: tuple, epoch: int, step: int, batches_per_epoch: int) -> torch.Tensor:
        """One iteration: warm-up, forward + loss + backward, and an optimizer step when due.

        Extend here (or override ``preprocess`` / ``forward_backward``) for multi-scale
        training, extra loss terms or a different update rule.
        """
        imgs, targets = self.preprocess(batch)
        ni = step + batches_per_epoch * epoch  # global iteration: warm-up depends on nothing else
        accumulate = self.accumulate
        if ni < self.warmup_iters:
            accumulate = apply_warmup(self.optimizer, ni=ni, warmup_iters=self.warmup_iters,
                                      epoch_factor=self.lf(epoch), hyp=self.hyp, accumulate=self.accumulate)
        loss_items = self.forward_backward(imgs, targets)
        self.pending += 1
        if self.pending >= accumulate:
            self.optimizer_step()
        return loss_items

    def preprocess(self, batch: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images -> float [0, 1] on the device; targets ``[M, 6]`` to the device."""
        imgs, targets = batch[0], batch[1]
        imgs = imgs.to(self.device, non_blocking=True).float() / 255.0
        if self.settings.channels_last:
            imgs = imgs.contiguous(memory_format=torch.channels_last)
        return imgs, targets.to(self.device)

    def forward_backward(self, imgs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Computes the loss (plus distillation) and back-propagates; returns the detached items."""
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            outputs = self.model(imgs)
            teacher_outputs = None
            if self.teacher is not None:
                with torch.no_grad():
                    teacher_outputs = self.teacher(imgs)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is torch.float16):
            if self.amp_dtype is torch.bfloat16:  # the loss in float32: bf16's 8-bit mantissa blurs box IoUs
                outputs, teacher_outputs = as_float(outputs), as_float(teacher_outputs)
            loss, loss_items = self.loss_fn(outputs, targets, imgs)
            if self.teacher is not None:
                distill, distill_item = self.distill_fn(outputs, teacher_outputs, imgs)
                loss = loss + distill
                loss_items = torch.cat([loss_items.reshape(-1), distill_item.reshape(-1)])
        if not self.scaler.is_enabled() and not torch.isfinite(loss):  # the fp16 grad scaler skips such steps
            raise TrainingDiverged(f"the loss became {loss.item()} (items {loss_items.tolist()}); lower lr0 in "
                                   f"the hyp file or set --max-grad-norm, then resume or restart the run")
        if self.dist.enabled:
            loss = loss * self.dist.world_size  # DDP averages gradients; YOLOv7's loss sums over the batch
        self.scaler.scale(loss).backward()
        return loss_items.detach()

    def optimizer_step(self) -> None:
        """Applies the accumulated gradients (optionally clipped), then updates the EMA."""
        self.scaler.unscale_(self.optimizer)  # a no-op without AMP; hooks and clipping see true gradients
        self.callbacks.on_before_optimizer_step(self)
        if self.settings.max_grad_norm:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(unwrap_model(self.model))
        self.pending = 0

    # -- one epoch ----------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict[str, float]:
        """Trains one epoch; returns the mean loss items (averaged over ranks)."""
        self.callbacks.on_epoch_start(self, epoch)
        seed_everything(self.settings.seed + epoch + 100_003 * self.dist.rank)  # exact resume per epoch
        set_epoch_lr(self.optimizer, self.lf(epoch))
        if hasattr(self.train_set, "mosaic"):
            self.train_set.mosaic = self._mosaic and epoch < self.settings.epochs - self.settings.close_mosaic
        loader = self.build_train_loader(epoch)
        nb = len(loader)
        self.warmup_iters = warmup_iterations(self.hyp.get("warmup_epochs", 0), nb, self.settings.warmup_min_iters,
                                              total_iters=nb * self.settings.epochs)
        self.model.train()
        mean = None
        bar = tqdm(loader, total=nb, disable=not self.dist.is_main or progress_off(), dynamic_ncols=True,
                   desc=f"epoch {epoch + 1}/{self.settings.epochs}")
        for step, batch in enumerate(bar):
            items = self.run_step(batch, epoch, step, nb)
            mean = items if mean is None else (mean * step + items) / (step + 1)
            bar.set_postfix(self._progress_fields(mean, batch))
            self.callbacks.on_step_end(self, epoch, step, items)
        if self.pending:  # apply the last partial accumulation so every epoch is self-contained
            self.optimizer_step()
        if mean is None:
            mean = torch.zeros(len(self.loss_names), device=self.device)
        mean = all_reduce_mean(mean, self.dist)
        return dict(zip(self.loss_names, (float(v) for v in mean), strict=False))

    @property
    def loss_names(self) -> list[str]:
        """The adapter's loss items, plus ``distill`` when a teacher is used."""
        names = list(self.adapter.loss_names)
        return names + ["distill"] if self.teacher is not None else names

    def _progress_fields(self, mean: torch.Tensor, batch: tuple) -> dict[str, str]:
        fields = {name: f"{float(v):.4f}" for name, v in zip(self.loss_names, mean, strict=False)}
        fields["lr"] = f"{self.optimizer.param_groups[0]['lr']:.2e}"
        fields["targets"] = str(int(batch[1].shape[0]))
        return fields

    def build_train_loader(self, epoch: int) -> Any:
        """A fresh loader per epoch: its shuffle depends only on (seed, epoch), and mosaic changes apply."""
        from yolo_prune.data import build_dataloader

        sampler = None
        if self.dist.enabled:
            sampler = torch.utils.data.distributed.DistributedSampler(
                self.train_set, num_replicas=self.dist.world_size, rank=self.dist.rank, shuffle=True,
                seed=self.settings.seed)
            sampler.set_epoch(epoch)
        return build_dataloader(self.train_set, self.batch_size, shuffle=sampler is None,
                                workers=self.settings.workers, sampler=sampler, seed=self.settings.seed + epoch)

    # -- after each epoch ---------------------------------------------------------------
    def validate(self, epoch: int) -> dict[str, float] | None:
        """COCO mAP of the EMA model on rank 0, when validation is due this epoch."""
        s = self.settings
        due = epoch == s.epochs - 1 or (epoch + 1) % s.val_period == 0
        if not (s.val and due and self.val_set is not None and self.dist.is_main):
            return None
        from yolo_prune.evaluation import evaluate

        model = self.ema.ema if self.ema is not None else unwrap_model(self.model)
        metrics = evaluate(model, self.val_set, decode=self.adapter.decode, device=self.device,
                           batch_size=s.val_batch_size or 2 * self.batch_size, half=self.amp_dtype is torch.float16,
                           workers=min(s.workers, 4), max_images=s.val_max_images)
        return {k: float(metrics[k]) for k in ("map50", "map50_95", "map75")}

    def end_epoch(self, epoch: int, losses: dict[str, float], seconds: float) -> dict[str, Any]:
        """Validation, results.csv, last.pt/best.pt (rank 0), then the ``on_epoch_end`` hook.

        ``results.png`` is redrawn when the epoch was validated and after the last one (drawing it
        takes over a second on a CPU core: every epoch, that was 4 % of a 10-epoch fine-tune).
        """
        if self.ema is not None:
            self.ema.update_attr(unwrap_model(self.model))
        metrics = self.validate(epoch)
        row: dict[str, Any] = {"epoch": epoch, **{f"train/{k}": v for k, v in losses.items()}}
        for key, name in (("map50", "mAP50"), ("map50_95", "mAP50-95"), ("map75", "mAP75")):
            row[f"metrics/{name}"] = metrics[key] if metrics else None
        for j, group in enumerate(self.optimizer.param_groups):
            row[f"lr/pg{j}"] = group["lr"]
        row["time_s"] = round(seconds, 2)
        if self.dist.is_main:
            improved = metrics is not None and (self.best_fitness is None or fitness(metrics) > self.best_fitness)
            if improved:
                self.best_fitness = fitness(metrics)
            self.log.append(row)
            if metrics is not None or epoch == self.settings.epochs - 1:  # a new mAP point, or the final curves
                plot_results([{k: v for k, v in r.items() if k == "epoch" or "/" in k} for r in self.log.rows],
                             self.paths.results_png)
            self.save(epoch, best=improved)
        barrier(self.dist)
        self.callbacks.on_epoch_end(self, epoch, row)
        return row

    def save(self, epoch: int, *, best: bool) -> None:
        """Writes ``last.pt`` (float32, full state for resume) and, when ``best``, ``best.pt``."""
        common = dict(adapter=self.adapter, model=unwrap_model(self.model), names=self.names, epoch=epoch,
                      best_fitness=self.best_fitness, results_text=self.log.text(), meta=self.model_meta)
        state = {**self.extra_state, "settings": self.settings.to_dict(), "hyp": self.hyp,
                 "best_fitness": self.best_fitness, "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None}
        checkpointing.save_last(self.paths.last, ema=self.ema, optimizer=self.optimizer, train_state=state,
                                **common)
        if best:
            checkpointing.save_best(self.paths.best, ema=self.ema, **common)
            self.best_written = True

    # -- the whole run ------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Runs epochs ``start_epoch .. epochs - 1``; returns the last results row."""
        self.callbacks.on_train_start(self)
        self.optimizer.zero_grad(set_to_none=True)
        row: dict[str, Any] = {}
        for epoch in range(self.start_epoch, self.settings.epochs):
            start = time.perf_counter()
            losses = self.train_epoch(epoch)
            row = self.end_epoch(epoch, losses, time.perf_counter() - start)
        if self.dist.is_main and not self.best_written and self.paths.last.exists():
            # never validated (e.g. --no-val): the final weights are the best we know
            self.save(self.settings.epochs - 1, best=True)
        self.callbacks.on_train_end(self)
        return row


def nhwc(model: nn.Module) -> nn.Module:
    """Puts every 4-d parameter and buffer of ``model`` in the channels_last layout, in place.

    ``Module.to(memory_format=...)`` refuses models holding a 5-d tensor; only 4-d ones (conv
    weights, implicit layers) matter to the convolutions.
    """
    for t in itertools.chain(model.parameters(), model.buffers()):
        if t.dim() == 4:
            t.data = t.data.contiguous(memory_format=torch.channels_last)
    return model


def as_float(outputs: Any) -> Any:
    """``outputs`` (a tensor, or lists, tuples and dicts of them) with every floating tensor in float32."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float() if outputs.is_floating_point() else outputs
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(as_float(v) for v in outputs)
    if isinstance(outputs, dict):
        return {k: as_float(v) for k, v in outputs.items()}
    return outputs
