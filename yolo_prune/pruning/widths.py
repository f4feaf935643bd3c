"""Honest widths: what each group keeps at a ratio (never below a minimum), and what pruning achieved.

torch-pruning keeps ``int(C * (1 - ratio))`` channels of a group (rounded down to ``round_to``).
At a high ratio that is 0 for a narrow group, and it then leaves the group whole, so ``--ratio
0.99`` used to remove *less* than 0.5, while wider groups collapsed to one channel. Here each
group keeps at least ``min_channels`` (rounded up to ``round_to``): the planned widths fall
monotonically with the ratio, and the pruner gets each group's own ratio so that it removes
exactly the planned channels. ``width_report`` then compares the result with the plan, and the
caller warns when the ratio could not be honoured (groups held at the minimum, or left whole).
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch
import torch_pruning as tp
from torch import nn

if TYPE_CHECKING:  # annotations only: generic code takes an adapter, it never imports the families
    from yolo_prune.adapters.base import DetectorAdapter

LOGGER = logging.getLogger(__name__)
ROOT_TYPES = (tp.ops.TORCH_CONV, tp.ops.TORCH_LINEAR, tp.ops.TORCH_LSTM)  # torch-pruning's group roots
_LAYER_TYPES = (nn.modules.conv._ConvNd, nn.Linear)  # what carries a group's ratio (not its BNs or bare parameters)


@dataclass
class GroupWidth:
    """One group's plan: ``channels`` now, ``wanted`` by the ratio alone, at least ``minimum``."""

    root: str
    channels: int
    wanted: int
    minimum: int
    layers: list[nn.Module]  # the convs that lose output channels together

    @property
    def keep(self) -> int:
        """The planned width: the ratio's, raised to the minimum."""
        return max(self.wanted, self.minimum)


def kept_channels(channels: int, ratio: float, *, round_to: int | None, min_channels: int) -> tuple[int, int]:
    """``(wanted, minimum)``: torch-pruning's count at ``ratio``, and the least a group of ``channels`` keeps.

    The minimum is ``min_channels`` rounded up to ``round_to`` (a narrower group keeps all it has).

    Example:
        >>> kept_channels(32, 0.99, round_to=None, min_channels=4)
        (0, 4)
    """
    wanted = int(channels * (1 - ratio))
    if round_to:
        wanted -= wanted % round_to
    floor = -(-min_channels // round_to) * round_to if round_to else min_channels
    return wanted, min(channels, floor)


def plan_widths(model: nn.Module, adapter: DetectorAdapter, example_inputs: torch.Tensor, forward_fn: Callable,
                layer_ratios: dict[nn.Module, float], settings: dict[str, Any]) -> list[GroupWidth]:
    """Every prunable group of ``model`` with the width it keeps under ``settings`` (``prune_model``'s)."""
    ignored_layers = adapter.ignored_layers(model)
    graph = tp.DependencyGraph().build_dependency(  # as BasePruner builds its own
        model, example_inputs=example_inputs, forward_fn=forward_fn,
        unwrapped_parameters=adapter.unwrapped_parameters(model),
        ignored_params=[p for p in ignored_layers if isinstance(p, nn.Parameter)])
    names = {m: n for n, m in model.named_modules()}
    ignored = [m for layer in ignored_layers if isinstance(layer, nn.Module) for m in layer.modules()]
    plans = []
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=ROOT_TYPES):
        root = group[0].dep.target.module
        if _channel_groups(graph, group) > 1:
            continue  # grouped channels: torch-pruning counts them per channel group; left to its own ratio
        channels = graph.get_out_channels(root)
        ratio = min(_group_ratio(graph, group, layer_ratios, settings["pruning_ratio"]), settings["max_pruning_ratio"])
        wanted, minimum = kept_channels(channels, ratio, round_to=settings["round_to"],
                                        min_channels=settings["min_channels"])
        layers = [dep.target.module for dep, _ in group if isinstance(dep.target.module, _LAYER_TYPES)
                  and graph.is_out_channel_pruning_fn(dep.handler)]
        plans.append(GroupWidth(names.get(root, "?"), channels, wanted, minimum, layers))
    return plans


def planned_ratios(plans: list[GroupWidth]) -> dict[nn.Module, float]:
    """torch-pruning's ``pruning_ratio_dict``: each group's layers at the ratio that keeps exactly ``keep``.

    The pruner keeps ``int(C * (1 - ratio))``; half a channel of margin makes that exactly ``keep``.
    """
    return {layer: 0.0 if p.keep >= p.channels else 1.0 - (p.keep + 0.5) / p.channels
            for p in plans for layer in p.layers}


def width_report(plans: list[GroupWidth], channels_after: dict[str, int], *, global_pruning: bool) -> dict[str, Any]:
    """What pruning achieved against the plan: channels before / after, groups held at the minimum or left whole.

    Under global pruning the ranking decides each group's share, so only the minimum width is a plan.
    """
    after = {p.root: channels_after.get(p.root, p.channels) for p in plans}
    before_total, after_total = sum(p.channels for p in plans), sum(after.values())
    local = not global_pruning
    return {
        "prunable_channels_before": before_total,
        "prunable_channels_after": after_total,
        "channel_reduction": 1 - after_total / before_total if before_total else 0.0,
        "groups": len(plans),
        "held_at_minimum": [p.root for p in plans if local and p.minimum > p.wanted],
        "left_whole": [p.root for p in plans if local and p.keep < p.channels == after[p.root]],
        "below_minimum": [p.root for p in plans if after[p.root] < p.minimum],
    }


@contextlib.contextmanager
def width_warnings_off() -> Iterator[None]:
    """No ``warn_if_dishonoured`` warning inside the block.

    For trial prunings (scan points, an allocation's check) that record what they achieved, where a
    group held at ``min_channels`` is the expected outcome, not news.
    """
    def drop(record: logging.LogRecord) -> bool:
        return False

    LOGGER.addFilter(drop)
    try:
        yield
    finally:
        LOGGER.removeFilter(drop)


def warn_if_dishonoured(report: dict[str, Any], *, pruning_ratio: float, min_channels: int,
                        macs_reduction: float, layer_ratios: bool = False) -> str | None:
    """Logs (and returns) one warning when some groups could not be pruned as the ratio(s) asked."""
    held, whole, below = report["held_at_minimum"], report["left_whole"], report["below_minimum"]
    if not (held or whole or below):
        return None
    parts = [f"{len(held)} of {report['groups']} groups held at the minimum width (min_channels={min_channels})"
             if held else "", f"{len(whole)} left whole (e.g. {whole[0]})" if whole else "",
             f"{len(below)} cut below {min_channels} channels by the global ranking (e.g. {below[0]})" if below else ""]
    asked = "the per-layer ratios" if layer_ratios else f"pruning ratio {pruning_ratio}"
    message = (f"{asked} could not be honoured everywhere: {', '.join(p for p in parts if p)}; "
               f"achieved: {report['channel_reduction']:.1%} of the prunable channels removed, "
               f"{macs_reduction:.2f}x fewer MACs (lower min_channels to prune further)")
    LOGGER.warning(message)
    return message


def _group_ratio(graph: tp.DependencyGraph, group: Any, layer_ratios: dict[nn.Module, float], default: float) -> float:
    """The ratio torch-pruning would give ``group``: the first of its layers with a ``layer_ratios`` entry."""
    for dep, _ in group:
        for module, fn in ((dep.source.module, dep.trigger), (dep.target.module, dep.handler)):
            if module in layer_ratios and graph.is_out_channel_pruning_fn(fn):
                return layer_ratios[module]
    return default


def _channel_groups(graph: tp.DependencyGraph, group: Any) -> int:
    """Channel grouping of ``group`` as torch-pruning detects it (grouped convs; depthwise ones excluded)."""
    counts = [1]
    for dep, _ in group:
        module = dep.target.module
        if isinstance(module, nn.Conv2d) and module.groups == module.out_channels:
            continue
        layer_pruner = graph.get_pruner_of_module(module)
        if layer_pruner is None:
            continue
        out = graph.is_out_channel_pruning_fn(dep.handler)
        counts.append(layer_pruner.get_out_channel_groups(module) if out else layer_pruner.get_in_channel_groups(module))
    return max(counts)
