"""Optimizer, learning-rate schedule, warm-up and gradient accumulation, as in YOLOv7.

* Three parameter groups: 0 = normalisation weights and bare parameters such as YOLOR
  implicit knowledge (no weight decay), 1 = conv/linear weights (weight decay), 2 = biases
  (no weight decay; warm-up starts them at ``warmup_bias_lr``).
* SGD with Nesterov momentum (YOLOv7), or AdamW (hyp key ``optimizer``; Ultralytics' choice for
  short runs).
* The per-epoch factor ``lf(epoch)`` is a one-cycle cosine or a linear ramp from 1 to ``lrf``.
* Warm-up ramps lr and momentum linearly per iteration, and the accumulation count from 1
  to ``nominal_batch / batch``.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch import nn

NO_DECAY, DECAY, BIAS = 0, 1, 2
SCHEDULES = ("cosine", "linear")
_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def split_param_groups(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter], list[nn.Parameter]]:
    """Sorts every trainable parameter into (no_decay, decay, bias), each exactly once.

    A module's ``bias`` goes to bias; a normalisation layer's ``weight`` to no_decay; any other
    ``weight`` to decay; every other parameter (``ImplicitA.implicit``, ``ImplicitM.implicit``
    and similar bare tensors of any family) to no_decay, as YOLOv7 does for its implicits.
    """
    no_decay, decay, bias = [], [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if name == "bias":
                bias.append(p)
            elif name == "weight" and not isinstance(module, _NORM_TYPES):
                decay.append(p)
            else:
                no_decay.append(p)
    return no_decay, decay, bias


OPTIMIZERS = ("SGD", "AdamW")


def build_optimizer(model: nn.Module, *, lr0: float, momentum: float, weight_decay: float,
                    nesterov: bool = True, optimizer: str = "SGD") -> torch.optim.Optimizer:
    """SGD or AdamW over the three groups of ``split_param_groups`` (indices ``NO_DECAY, DECAY, BIAS``).

    AdamW takes ``momentum`` as its first beta (as Ultralytics does), so one hyp key serves both.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    no_decay, decay, bias = split_param_groups(model)
    if optimizer == "AdamW":
        optimizer = torch.optim.AdamW(no_decay, lr=lr0, betas=(momentum, 0.999), weight_decay=0.0)
    else:
        optimizer = torch.optim.SGD(no_decay, lr=lr0, momentum=momentum, nesterov=nesterov, weight_decay=0.0)
    optimizer.add_param_group({"params": decay, "weight_decay": weight_decay})
    optimizer.add_param_group({"params": bias, "weight_decay": 0.0})
    for group in optimizer.param_groups:
        group["initial_lr"] = lr0
    return optimizer


def lr_factor(schedule: str, epochs: int, lrf: float) -> Callable[[int], float]:
    """``lf(epoch)``: 1 at epoch 0, ``lrf`` at the last epoch (cosine one-cycle or linear)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown lr schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    span = max(epochs - 1, 1)
    if schedule == "linear":
        return lambda epoch: (1.0 - epoch / span) * (1.0 - lrf) + lrf
    return lambda epoch: ((1.0 - math.cos(epoch * math.pi / span)) / 2.0) * (lrf - 1.0) + 1.0


def set_epoch_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Sets every group's lr to ``initial_lr * factor`` (the scheduler step, without state)."""
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * factor


def accumulate_steps(nominal_batch: int, batch_size: int) -> int:
    """Batches whose gradients are summed before one optimizer step (YOLOv7: 64 / batch)."""
    return max(round(nominal_batch / batch_size), 1)


def scaled_weight_decay(weight_decay: float, batch_size: int, accumulate: int, nominal_batch: int) -> float:
    """Weight decay for the effective batch, as YOLOv7 scales it."""
    return weight_decay * batch_size * accumulate / nominal_batch


def warmup_iterations(warmup_epochs: float, batches_per_epoch: int, min_iters: int,
                      total_iters: int | None = None) -> int:
    """Warm-up length in iterations: ``max(warmup_epochs * nb, min_iters)``; 0 when the hyp has none.

    The ``min_iters`` floor (official: a fixed minimum) may take at most a third of the run
    (``total_iters``), so a short fine-tuning run on a small set warms up for the hyp's
    ``warmup_epochs`` instead of spending most of its iterations below ``lr0``.
    """
    if warmup_epochs <= 0:
        return 0
    floor = min_iters if total_iters is None else min(min_iters, total_iters // 3)
    return max(round(warmup_epochs * batches_per_epoch), floor)


def apply_warmup(optimizer: torch.optim.Optimizer, *, ni: int, warmup_iters: int, epoch_factor: float,
                 hyp: dict, accumulate: int) -> int:
    """Warm-up at global iteration ``ni``: sets lr/momentum of each group, returns the accumulation.

    lr rises from 0 (biases: from ``warmup_bias_lr``) to ``initial_lr * epoch_factor``; momentum
    from ``warmup_momentum`` to ``momentum``; accumulation from 1 to ``accumulate``.
    """
    xi = [0, warmup_iters]
    for j, group in enumerate(optimizer.param_groups):
        start = hyp["warmup_bias_lr"] if j == BIAS else 0.0
        group["lr"] = float(np.interp(ni, xi, [start, group["initial_lr"] * epoch_factor]))
        if "momentum" in group:
            group["momentum"] = float(np.interp(ni, xi, [hyp["warmup_momentum"], hyp["momentum"]]))
    return max(1, int(np.interp(ni, xi, [1, accumulate]).round()))
