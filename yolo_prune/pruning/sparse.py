"""Sparse training before pruning: a regulariser the fine-tuning loop applies every step.

Network slimming (Liu et al. 2017) adds an L1 penalty on BatchNorm scales while training, so
unimportant channels drift towards zero and pruning them later (``--importance bn_scale``)
costs little. Group-norm regularisation (torch-pruning's ``GroupNormPruner``, DepGraph paper)
pushes whole coupled groups towards zero instead. Both are torch-pruning pruners whose
``regularize(model)`` adds the penalty's gradient to ``.grad``; here they are wrapped so the
trainer needs one call, made after ``loss.backward()`` and before ``optimizer.step()``:

    >>> reg = build_sparse_regularizer("bn_l1", model, adapter, reg=1e-4, img_size=640)
    >>> loss.backward()
    >>> reg.regularize(model)          # gradients must be unscaled (AMP: after scaler.unscale_)
    >>> optimizer.step()

``SparseTrainingCallback("bn_l1", reg=1e-4)`` does exactly this through the trainer's hooks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch_pruning as tp
from torch import nn

from yolo_prune.engine.distributed import unwrap_model
from yolo_prune.engine.hooks import TrainerCallbacks
from yolo_prune.registry import Registry
from yolo_prune.settings import IMG_SIZE

if TYPE_CHECKING:  # annotations only: generic code takes an adapter, it never imports the families
    from yolo_prune.adapters.base import DetectorAdapter

DEFAULT_REG = 1e-4  # penalty strength; network slimming uses about this for detectors


class SparseRegularizer:
    """Adds a sparsity penalty's gradient to a model's ``.grad`` (wraps a torch-pruning pruner).

    Args:
        pruner: A torch-pruning pruner with ``regularize(model, ...)`` built on ``model``.
        reg: Penalty strength (the gradient added is ``reg * d(penalty)/dw``).
        method: Registry name, for messages and run records.
    """

    def __init__(self, pruner: tp.pruner.BasePruner, reg: float, method: str) -> None:
        self.pruner, self.reg, self.method = pruner, float(reg), method

    def regularize(self, model: nn.Module, *, grad_scale: float = 1.0) -> None:
        """Adds the penalty gradient; ``grad_scale`` is the loss scale when gradients are still scaled."""
        self.pruner.reg = self.reg * grad_scale  # both pruners read .reg when no strength is passed
        self.pruner.regularize(model)

    def update_regularizer(self) -> None:
        """Re-reads the pruning groups; call after the model's structure changed (e.g. pruned)."""
        self.pruner.update_regularizer()


@dataclass(frozen=True)
class SparseSpec:
    """How to build one method's torch-pruning pruner: ``build(model, example_inputs, reg, **common)``."""

    build: Callable[..., tp.pruner.BasePruner]
    description: str = ""


SPARSE_METHODS: Registry[SparseSpec] = Registry("sparse-training method")
SPARSE_METHODS.register("bn_l1")(SparseSpec(
    lambda model, x, reg, **kw: tp.pruner.BNScalePruner(model, x, importance=tp.importance.BNScaleImportance(),
                                                         reg=reg, group_lasso=False, **kw),
    "network slimming: L1 on BatchNorm scales (prune later with --importance bn_scale)"))
SPARSE_METHODS.register("bn_group_lasso")(SparseSpec(
    lambda model, x, reg, **kw: tp.pruner.BNScalePruner(model, x, importance=tp.importance.BNScaleImportance(),
                                                         reg=reg, group_lasso=True, **kw),
    "group lasso on the BatchNorm scales of each coupled group"))
SPARSE_METHODS.register("group_norm")(SparseSpec(
    lambda model, x, reg, **kw: tp.pruner.GroupNormPruner(
        model, x, importance=tp.importance.GroupMagnitudeImportance(p=2), reg=reg, **kw),
    "group-norm regularisation of all coupled weights (DepGraph; prune with l2)"))


def build_sparse_regularizer(method: str, model: nn.Module, adapter: DetectorAdapter, *, reg: float = DEFAULT_REG,
                             img_size: int = IMG_SIZE) -> SparseRegularizer:
    """Builds the regulariser ``method`` (``SPARSE_METHODS``) for ``model`` as it is being trained.

    Args:
        method: ``bn_l1`` (network slimming), ``bn_group_lasso`` or ``group_norm``.
        model: The model the trainer updates (its modules are the ones regularised).
        adapter: Its adapter (ignored layers are not regularised; bare parameters are traced).
        reg: Penalty strength; network slimming uses about 1e-4 for detectors.
        img_size: Tracing input size.

    Raises:
        ValueError: The adapter's tracing rewrite replaces modules (the penalty would miss them).
    """
    spec = SPARSE_METHODS.get(method)
    if reg <= 0:
        raise ValueError(f"sparse-training reg must be > 0 (e.g. 1e-4), got {reg}")
    was_training = model.training
    model = adapter.prepare_for_pruning(model).eval()
    example = torch.zeros(1, 3, img_size, img_size, device=next(model.parameters()).device)
    pruner = spec.build(model, example, reg, ignored_layers=adapter.ignored_layers(model),
                        unwrapped_parameters=adapter.unwrapped_parameters(model))
    model = adapter.finish_pruning(model)
    model.train(was_training)
    _check_modules_live(pruner, model, method)
    return SparseRegularizer(pruner, reg, method)


def _check_modules_live(pruner: tp.pruner.BasePruner, model: nn.Module, method: str) -> None:
    """Every module the pruner traced must be one the trained model still holds."""
    live = {id(m) for m in model.modules()}
    stale = [name for module, name in pruner.DG._module2name.items()
             if isinstance(module, nn.Module) and id(module) not in live]
    if stale:
        raise ValueError(f"sparse training ({method}) cannot follow this model: the adapter's "
                         f"prepare_for_pruning replaced {stale[:3]} while tracing, so the penalty would miss them. "
                         f"Use --importance bn_scale after plain fine-tuning, or make the adapter rewrite in place.")


class SparseTrainingCallback(TrainerCallbacks):
    """Trainer hooks for sparse training: ``finetune(..., callbacks=SparseTrainingCallback("bn_l1"))``.

    The regulariser is built at ``on_train_start`` on the model exactly as the trainer holds it
    (on its device, after any SyncBatchNorm conversion), applied in ``on_before_optimizer_step``
    (which the trainer calls with unscaled gradients), and the BN-scale sparsity is logged per epoch.

    Args:
        method: ``SPARSE_METHODS`` name (``bn_l1``, ``bn_group_lasso``, ``group_norm``).
        reg: Penalty strength.
        img_size: Tracing size (default: the trainer's ``settings.img_size``).
    """

    def __init__(self, method: str, *, reg: float = DEFAULT_REG, img_size: int | None = None) -> None:
        SPARSE_METHODS.get(method)  # a typo fails now, not after the data is loaded
        if reg <= 0:
            raise ValueError(f"sparse-training reg must be > 0 (e.g. 1e-4), got {reg}")
        self.method, self.reg, self.img_size = method, reg, img_size
        self.regularizer: SparseRegularizer | None = None
        self.history: list[dict[str, float]] = []

    def on_train_start(self, trainer: Any) -> None:
        """Builds the regulariser on the model exactly as the trainer holds it."""
        img_size = self.img_size or trainer.settings.img_size
        self.regularizer = build_sparse_regularizer(self.method, unwrap_model(trainer.model), trainer.adapter,
                                                    reg=self.reg, img_size=img_size)

    def on_before_optimizer_step(self, trainer: Any) -> None:
        """Adds the penalty's gradient (the trainer has unscaled the gradients)."""
        if self.regularizer is None:
            raise RuntimeError("SparseTrainingCallback.on_train_start was not called; pass the callback to the "
                               "trainer (finetune(..., callbacks=...)) rather than calling its hooks by hand")
        self.regularizer.regularize(unwrap_model(trainer.model))

    def on_epoch_end(self, trainer: Any, epoch: int, row: dict[str, Any]) -> None:
        """Records how sparse the BatchNorm scales are after this epoch."""
        self.history.append({"epoch": epoch, **bn_gamma_summary(unwrap_model(trainer.model))})


def bn_gamma_summary(model: nn.Module, threshold: float = 1e-2) -> dict[str, float]:
    """How sparse the BN scales are: mean |gamma| and the fraction below ``threshold``."""
    gammas = torch.cat([m.weight.detach().abs().flatten() for m in model.modules()
                        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine] or [torch.zeros(0)])
    if gammas.numel() == 0:
        return {"bn_gamma_abs_mean": 0.0, "bn_gamma_below_threshold": 0.0}
    return {"bn_gamma_abs_mean": float(gammas.mean()),
            "bn_gamma_below_threshold": float((gammas < threshold).float().mean())}

