"""Exponential moving average of model weights (the ``ModelEMA`` of YOLOv5/YOLOv7).

The EMA copy is what gets validated and what ``best.pt`` users deploy: it is smoother than
the raw weights, especially early in fine-tuning. The decay ramps up from 0 so that the
first updates follow the model closely: ``decay * (1 - exp(-updates / tau))``.
"""
from __future__ import annotations

import copy
import math
from typing import Iterable

import torch
from torch import nn

# Attributes a YOLO model carries besides its weights; copied so the EMA model is saveable alone.
DEFAULT_EMA_ATTRS = ("yaml", "nc", "hyp", "gr", "names", "stride", "class_weights")


class ModelEMA:
    """Keeps ``ema``, a float32 eval-mode copy of a model, averaged after every optimizer step.

    Args:
        model: The model being trained (unwrapped, not the DDP wrapper).
        decay: Asymptotic decay of the average.
        tau: Ramp-up constant in optimizer updates.
        updates: Updates already done (when resuming).
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0) -> None:
        self.ema = copy.deepcopy(model).float().eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.tau = tau
        self.updates = updates

    def current_decay(self) -> float:
        """The decay the next ``update`` uses."""
        return self.decay * (1.0 - math.exp(-(self.updates + 1) / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Moves every floating-point weight and buffer of ``ema`` towards ``model``."""
        d = self.current_decay()
        self.updates += 1
        model_state = model.state_dict()
        for name, value in self.ema.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(model_state[name].detach().to(value.dtype), alpha=1.0 - d)

    def update_attr(self, model: nn.Module, include: Iterable[str] = DEFAULT_EMA_ATTRS) -> None:
        """Copies plain (non-tensor-state) attributes such as ``names`` from ``model``."""
        for name in include:
            if hasattr(model, name):
                setattr(self.ema, name, getattr(model, name))

    @classmethod
    def from_state(cls, ema_model: nn.Module, updates: int, decay: float = 0.9999,
                   tau: float = 2000.0) -> "ModelEMA":
        """Rebuilds an EMA from a saved EMA model (resume); the saved weights are kept exactly."""
        ema = cls.__new__(cls)
        ema.ema = ema_model.float().eval()
        for p in ema.ema.parameters():
            p.requires_grad_(False)
        ema.decay, ema.tau, ema.updates = decay, tau, int(updates)
        return ema
