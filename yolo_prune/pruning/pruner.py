"""The generic channel pruner: torch-pruning's dependency graph driven by an adapter.

The adapter says what must keep its output channels (``ignored_layers``) and which bare
parameters carry channels (``unwrapped_parameters``); everything else - coupling through
concatenations, residual adds, BatchNorms, re-parameterisable branches - is found by
torch-pruning's tracer. This module adds the checks users need: a ratio of zero changes
nothing, a ratio above zero must remove something, and output shapes must survive.
"""
from __future__ import annotations

import contextlib
import fnmatch
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import torch
import torch_pruning as tp
from torch import nn

from yolo_prune.pruning.compensation import Compensator
from yolo_prune.pruning.importance import get_importance
from yolo_prune.pruning.settings import PRUNE_DEFAULTS as D
from yolo_prune.pruning.widths import GroupWidth, plan_widths, planned_ratios, warn_if_dishonoured, width_report
from yolo_prune.settings import check_value

if TYPE_CHECKING:  # annotations only: generic code takes an adapter, it never imports the families
    from yolo_prune.adapters.base import DetectorAdapter

# (images float [B, 3, H, W] in 0..1, targets [M, 6] = (batch_idx, cls, cx, cy, w, h) normalised)
Batch = tuple[torch.Tensor, torch.Tensor]


TRACE_SIZE = 128


class PruningError(RuntimeError):
    """Pruning could not produce a valid smaller model; the message says why and what to try."""


@dataclass
class PruneGroup:
    """One set of coupled layers that lose the same channels."""

    root: str
    layers: list[str]
    channels: int
    pruned: int


@dataclass
class PruneResult:
    """What pruning did. ``model`` is the (in place) pruned model, unchanged on a dry run."""

    model: nn.Module
    params_before: int
    params_after: int
    macs_before: float
    macs_after: float
    groups: list[PruneGroup] = field(default_factory=list)
    channels_before: dict[str, int] = field(default_factory=dict)
    channels_after: dict[str, int] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    dry_run: bool = False
    widths: dict[str, Any] = field(default_factory=dict)  # widths.width_report: what the ratio achieved

    def __repr__(self) -> str:
        done = "would prune" if self.dry_run else "pruned"
        return (f"PruneResult(params {self.params_before / 1e6:.2f} M -> {self.params_after / 1e6:.2f} M, GMACs "
                f"{self.gmacs_before:.3f} -> {self.gmacs_after:.3f} ({self.macs_reduction:.1f}x), "
                f"{len(self.groups)} groups{'' if not self.dry_run else ', ' + done})")

    @property
    def gmacs_before(self) -> float:
        """MACs before pruning, in billions."""
        return self.macs_before / 1e9

    @property
    def gmacs_after(self) -> float:
        """MACs after pruning, in billions."""
        return self.macs_after / 1e9

    @property
    def macs_reduction(self) -> float:
        """How many times fewer MACs the pruned model needs."""
        return self.macs_before / max(self.macs_after, 1.0)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary (the report written beside a pruned checkpoint)."""
        return {
            "settings": self.settings,
            "dry_run": self.dry_run,
            "params_m_before": self.params_before / 1e6,
            "params_m_after": self.params_after / 1e6,
            "gmacs_before": self.gmacs_before,
            "gmacs_after": self.gmacs_after,
            "macs_reduction": self.macs_reduction,
            "groups": [vars(g) for g in self.groups],
            "channels_before": self.channels_before,
            "channels_after": self.channels_after,
            "widths": self.widths,
        }


def prune_model(model: nn.Module, adapter: DetectorAdapter, *, img_size: int = D.img_size,
                importance: str = D.importance, pruning_ratio: float = D.pruning_ratio,
                global_pruning: bool = D.global_pruning, layer_ratios: dict[str, float] | None = None,
                max_pruning_ratio: float = D.max_pruning_ratio, round_to: int | None = D.round_to,
                min_channels: int = D.min_channels, iterative_steps: int = D.iterative_steps,
                taylor_batches: Iterable[Batch] | None = None, loss_hyp: dict | None = None, seed: int = D.seed,
                calibration_batches: Iterable[Batch] | None = None, dry_run: bool = False) -> PruneResult:
    """Removes whole channels of ``model`` (in place) at ``pruning_ratio`` (defaults: ``PruneSettings``).

    Args:
        model: A float32 detector of ``adapter``'s family.
        adapter: Tells which layers are ignored and which parameters are unwrapped.
        img_size: Side of the square example input used for MAC counting.
        importance: A name in ``yolo_prune.pruning.IMPORTANCES`` (l1, l2, taylor, ...).
        pruning_ratio: Fraction of channels removed per group (or globally), in [0, 1).
        global_pruning: Rank channels across all groups instead of within each group.
        layer_ratios: ``{conv-name glob: ratio}`` overriding ``pruning_ratio`` (e.g. ``{"model.7[5-9]*": 0.2}``).
        max_pruning_ratio: No layer loses more than this fraction (useful with global).
        round_to: Keep channel counts multiples of this (hardware-friendly widths).
        min_channels: No group keeps fewer output channels (rounded up to ``round_to``); when that
            holds groups back, a warning gives the reduction achieved (``result.widths``).
        iterative_steps: Reach the ratio in this many equal steps (importance re-ranked).
        taylor_batches: Batches whose loss gradients feed ``taylor``; synthetic if None.
        loss_hyp: Hyper-parameters for the adapter's loss (Taylor only).
        seed: Seeds the random criterion and synthetic batches, so runs repeat.
        calibration_batches: Real images: refit each conv that loses inputs by least squares (``compensation``).
        dry_run: Only list the groups and how many channels each would lose.

    Raises:
        ValueError: An argument is out of range or names nothing.
        PruningError: Nothing was removed, or the output shapes changed.
    """
    settings = dict(importance=importance, pruning_ratio=pruning_ratio, global_pruning=global_pruning,
                    layer_ratios=dict(layer_ratios or {}), max_pruning_ratio=max_pruning_ratio,
                    round_to=round_to, min_channels=min_channels, iterative_steps=iterative_steps,
                    img_size=img_size, seed=seed, compensate=calibration_batches is not None)
    check_prune_settings(settings)  # before the model is touched
    torch.manual_seed(seed)
    was_training = model.training
    model = adapter.prepare_for_pruning(model).eval()
    result, trace_inputs, shapes_before = _before(model, adapter, settings, dry_run)
    nothing_to_do = pruning_ratio == 0 and not layer_ratios
    if not nothing_to_do:
        result.groups, plans, widths = _prune_groups(model, adapter, trace_inputs, settings, taylor_batches,
                                                     loss_hyp, calibration_batches, dry_run)
    result.model = adapter.finish_pruning(model)
    result.model.train(was_training)
    if not (dry_run or nothing_to_do):
        _after(result, adapter, trace_inputs, shapes_before, plans, widths)
    return result


def _after(result: PruneResult, adapter: DetectorAdapter, trace_inputs: torch.Tensor,
           shapes_before: list[tuple[int, ...]], plans: list[GroupWidth], widths: dict[str, int]) -> None:
    """Checks the pruned model (output shapes, something removed), then measures what the ratio achieved."""
    s = result.settings
    _check_shapes(shapes_before, _output_shapes(result.model, adapter, trace_inputs))  # restores the mode
    _measure_after(result, s["img_size"])
    result.widths = width_report(plans, widths, global_pruning=s["global_pruning"])
    warn_if_dishonoured(result.widths, pruning_ratio=s["pruning_ratio"], min_channels=s["min_channels"],
                        macs_reduction=result.macs_reduction, layer_ratios=bool(s.get("layer_ratios")))


def _before(model: nn.Module, adapter: DetectorAdapter, settings: dict[str, Any],
            dry_run: bool) -> tuple[PruneResult, torch.Tensor, list[tuple[int, ...]]]:
    """The unpruned model's counts (as a result that changed nothing), the tracing input, its output shapes.

    Tracing and the shape check only need the graph, not the full resolution: a small input
    (a multiple of every YOLO stride up to 64 and 128) makes pruning a full-size model fast.
    """
    img_size = settings["img_size"]
    example_inputs = torch.zeros(1, 3, img_size, img_size, device=next(model.parameters()).device)
    trace_inputs = example_inputs[..., :min(img_size, TRACE_SIZE), :min(img_size, TRACE_SIZE)]
    shapes = _output_shapes(model, adapter, trace_inputs)  # train and eval outputs
    macs, params = tp.utils.count_ops_and_params(model, example_inputs)
    channels = conv_out_channels(model)
    result = PruneResult(model, params, params, macs, macs, [], channels, dict(channels), settings, dry_run)
    return result, trace_inputs, shapes


def _prune_groups(model: nn.Module, adapter: DetectorAdapter, trace_inputs: torch.Tensor, settings: dict[str, Any],
                  taylor_batches: Iterable[Batch] | None, loss_hyp: dict | None,
                  calibration_batches: Iterable[Batch] | None,
                  dry_run: bool) -> tuple[list[PruneGroup], list[GroupWidth], dict[str, int]]:
    """Runs torch-pruning's pruner step by step (one step on a dry run), compensating when given images.

    Returns what each group lost, the planned widths (``widths.plan_widths``) and the conv widths
    after pruning (of the model as the adapter prepared it, whose names the plan uses).
    """
    spec = get_importance(settings["importance"])
    steps = settings["iterative_steps"]
    groups: list[PruneGroup] = []
    with _parameters_require_grad(model), _training_mode_frozen_bn(model):
        layer_ratios = _match_layer_ratios(model, settings["layer_ratios"], adapter)
        plans = plan_widths(model, adapter, trace_inputs, _training_forward, layer_ratios, settings)
        if not settings["global_pruning"]:  # each group at the ratio that keeps its planned width
            layer_ratios = {**layer_ratios, **planned_ratios(plans)}
        compensate = None
        if calibration_batches is not None and not dry_run:  # inputs of the unpruned model, every head branch
            compensate = Compensator(model, (imgs for imgs, _ in calibration_batches))
        pruner = tp.pruner.BasePruner(
            model, trace_inputs, importance=spec.build(), global_pruning=settings["global_pruning"],
            pruning_ratio=settings["pruning_ratio"], pruning_ratio_dict=layer_ratios,
            max_pruning_ratio=settings["max_pruning_ratio"], iterative_steps=steps,
            ignored_layers=adapter.ignored_layers(model), round_to=settings["round_to"],
            unwrapped_parameters=adapter.unwrapped_parameters(model), forward_fn=_training_forward)
        for _ in range(1 if dry_run else steps):
            if spec.needs_gradients:
                _accumulate_loss_gradients(model, adapter, taylor_batches, settings["img_size"], loss_hyp,
                                           settings["seed"])
            groups.extend(_run_step(pruner, dry_run, compensate))
        model.zero_grad(set_to_none=True)
    return groups, plans, conv_out_channels(model)


def _measure_after(result: PruneResult, img_size: int) -> None:
    """Fills the after-pruning MACs, params and widths; refuses a step that removed nothing."""
    example_inputs = torch.zeros(1, 3, img_size, img_size, device=next(result.model.parameters()).device)
    result.macs_after, result.params_after = tp.utils.count_ops_and_params(result.model, example_inputs)
    result.channels_after = conv_out_channels(result.model)
    if result.params_after >= result.params_before:
        raise PruningError(
            f"pruning at ratio {result.settings['pruning_ratio']} removed nothing (params {result.params_before}). "
            "Every group was ignored or already at its limit: lower max_pruning_ratio or round_to, check the "
            "adapter's ignored_layers, or raise the ratio.")


def conv_out_channels(model: nn.Module) -> dict[str, int]:
    """Output channels of every conv, by qualified name (for reports and plots)."""
    return {name: m.out_channels for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def check_prune_settings(settings: dict[str, Any]) -> None:
    """Checks ``prune_model`` settings (ranges, the criterion's name, layer ratios) before any model is run.

    Raises:
        ValueError: the setting, its value and what it must be.
        KeyError: an unknown importance (with the close match).
    """
    if not 0.0 <= _finite(settings["pruning_ratio"]) < 1.0:
        raise ValueError(f"pruning ratio must be in [0, 1), got {settings['pruning_ratio']}; e.g. 0.5 removes half "
                         f"the channels")
    for name in ("max_pruning_ratio", "round_to", "min_channels", "iterative_steps", "img_size"):
        check_value(name, settings[name])
    for pattern, ratio in settings["layer_ratios"].items():
        if not 0.0 <= _finite(ratio) < 1.0:
            raise ValueError(f"layer ratio for {pattern!r} must be in [0, 1), got {ratio}")
    get_importance(settings["importance"])


def _finite(value: Any) -> float:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if number and math.isfinite(value) else float("nan")  # NaN fails every range


def _match_layer_ratios(model: nn.Module, layer_ratios: dict[str, float] | None,
                        adapter: DetectorAdapter) -> dict[nn.Module, float]:
    """Turns ``{name glob: ratio}`` into torch-pruning's ``{module: ratio}``."""
    matched: dict[nn.Module, float] = {}
    ignored = {id(m) for layer in adapter.ignored_layers(model) for m in layer.modules()}
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and id(m) not in ignored}
    for pattern, ratio in (layer_ratios or {}).items():
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"layer ratio for {pattern!r} must be in [0, 1), got {ratio}")
        hits = [m for n, m in convs.items() if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            examples = ", ".join(list(convs)[:5])
            raise ValueError(f"layer pattern {pattern!r} matches no prunable conv; names look like: {examples}")
        matched.update({m: ratio for m in hits})
    return matched


def _run_step(pruner: tp.pruner.BasePruner, dry_run: bool, compensate: Compensator | None = None) -> list[PruneGroup]:
    """One pruning step; returns what each group lost (or would lose)."""
    names = pruner.DG._module2name
    described = []
    for group in pruner.step(interactive=True):
        root = group[0].dep.target.module
        layers = sorted({names.get(dep.target.module, "?") for dep, _ in group
                         if isinstance(dep.target.module, nn.Conv2d) and pruner.DG.is_out_channel_pruning_fn(dep.handler)})
        described.append(PruneGroup(root=names.get(root, "?"), layers=layers,
                                    channels=pruner.DG.get_out_channels(root), pruned=len(group[0].idxs)))
        if not dry_run:
            if compensate is not None:
                compensate(group, pruner.DG)
            group.prune()
    return described


@contextlib.contextmanager
def _parameters_require_grad(model: nn.Module) -> Iterator[None]:
    """torch-pruning traces through autograd: a frozen parameter silently hides its layer."""
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    for p in model.parameters():
        p.requires_grad_(True)
    try:
        yield
    finally:
        # pruning replaces parameters by new objects, so restore the flags by name
        for name, p in model.named_parameters():
            p.requires_grad_(name not in frozen)


@contextlib.contextmanager
def _training_mode_frozen_bn(model: nn.Module) -> Iterator[None]:
    """Training-mode forward (all head branches run) without touching BN running statistics."""
    was_training = model.training
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _training_forward(model: nn.Module, x: torch.Tensor) -> Any:
    """The training forward, traced instead of the eval one torch-pruning's tracer would run.

    Some heads only use every branch in training mode (IAuxDetect returns no auxiliary maps in eval).
    """
    with _training_mode_frozen_bn(model):
        return model(x)


def _output_shapes(model: nn.Module, adapter: DetectorAdapter, x: torch.Tensor) -> list[tuple[int, ...]]:
    """Shapes of the head's output tensors, in training mode and in eval mode."""
    was_training = model.training
    with torch.no_grad():
        with _training_mode_frozen_bn(model):
            shapes = adapter.output_shapes(model(x))
        model.eval()
        shapes += adapter.output_shapes(model(x))
    model.train(was_training)
    return shapes


def _check_shapes(before: list[tuple[int, ...]], after: list[tuple[int, ...]]) -> None:
    if before != after:
        raise PruningError(
            f"pruning changed the model's output shapes from {before} to {after}: a head layer lost "
            "channels. The adapter's ignored_layers must list every output conv of the head.")


def _accumulate_loss_gradients(model: nn.Module, adapter: DetectorAdapter, batches: Iterable[Batch] | None,
                               img_size: int, loss_hyp: dict | None, seed: int) -> None:
    """Fills ``.grad`` with the summed loss gradients of a few batches (for Taylor ranking)."""
    from yolo_prune.pruning.synthetic_batches import default_loss_hyp, random_batches

    model.zero_grad(set_to_none=True)
    nc = getattr(model, "nc", None) or len(getattr(model, "names", [])) or 80
    batches = batches if batches is not None else random_batches(img_size, nc, seed=seed)
    loss_fn = adapter.loss(model, loss_hyp if loss_hyp is not None else default_loss_hyp())
    device = next(model.parameters()).device
    with _training_mode_frozen_bn(model):  # gradients only: BN statistics stay as they are
        for imgs, targets in batches:
            imgs, targets = imgs.to(device), targets.to(device)
            loss, _ = loss_fn(model(imgs), targets, imgs)
            loss.backward()
