"""Ratio allocation: per-unit pruning ratios that reach a cost target with the least predicted loss.

From a sensitivity scan every unit has two curves over its ratio: the score drop, and the
saving in the target metric (GMACs, parameters or measured latency) when that unit alone is
pruned. Assuming drops and savings add up across units, the cheapest way to save ``S`` is
found greedily on the lower convex hull of each unit's (saving, drop) curve: repeatedly take
the move with the least drop per unit of saving (the Lagrangian solution of the discrete
knapsack). Savings do not add up exactly - pruning two neighbouring groups shrinks the conv
between them twice - so ``allocate_and_verify`` prunes a copy with the allocation, measures
the real value and corrects the requested saving until the target is met within tolerance.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np
from torch import nn

if TYPE_CHECKING:  # annotations only: generic code takes an adapter, it never imports the families
    from yolo_prune.adapters.base import DetectorAdapter
from yolo_prune.pruning.pruner import PruneResult, prune_model
from yolo_prune.pruning.recipe import Recipe
from yolo_prune.pruning.sensitivity import SensitivityResult
from yolo_prune.pruning.settings import SENSITIVITY_DEFAULTS
from yolo_prune.pruning.widths import width_warnings_off
from yolo_prune.registry import unknown_name_message
from yolo_prune.settings import IMG_SIZE

RATIO_STEP = SENSITIVITY_DEFAULTS.step  # grid of candidate ratios between the scanned ones
SMOOTHNESS = 1e-3  # tie-breaking penalty smoothness * ratio**2, in score units
# target metric -> (field of ScanPoint / baseline, divisor turning it into the metric's unit)
TARGET_METRICS: dict[str, tuple[str, float]] = {"gmacs": ("macs", 1e9), "params_m": ("params", 1e6),
                                                "latency_ms": ("latency_ms", 1.0)}


@dataclass(frozen=True)
class Target:
    """Reach ``value`` (in the metric's unit: GMACs, M params or ms) within ``tolerance`` (relative)."""

    metric: str
    value: float
    tolerance: float = SENSITIVITY_DEFAULTS.tolerance

    def __post_init__(self) -> None:
        if self.metric not in TARGET_METRICS:
            raise ValueError(unknown_name_message("target metric", self.metric, TARGET_METRICS))
        if self.value <= 0:
            raise ValueError(f"target {self.metric} must be positive, got {self.value}")
        if not 0 < self.tolerance < 1:
            raise ValueError(f"target tolerance is relative, in (0, 1), e.g. 0.05; got {self.tolerance}")

    def met_by(self, value: float) -> bool:
        """True when ``value`` lies within the tolerance of the target."""
        return abs(value - self.value) <= self.tolerance * self.value


def target_from_reduction(scan: SensitivityResult, metric: str, reduction: float, *,
                          tolerance: float = 0.05) -> Target:
    """The target ``reduction`` times below the scan's baseline (e.g. 3.0: a third of the GMACs)."""
    if reduction <= 1:
        raise ValueError(f"a reduction must be > 1 (e.g. 3 for 3x fewer {metric}), got {reduction}")
    return Target(metric, baseline_value(scan, metric) / reduction, tolerance)


def baseline_value(scan: SensitivityResult, metric: str) -> float:
    """The unpruned model's value of ``metric`` (GMACs, M params or ms) in the scan."""
    key, unit = _metric(metric)
    value = scan.baseline.get(key)
    if value is None:
        raise ValueError(f"the scan has no baseline {metric}; rerun the scan with latency measurement "
                         f"(--latency) to allocate for latency")
    return float(value) / unit


@dataclass
class Allocation:
    """Per-unit ratios, their layer-ratio globs and the predicted / measured outcome."""

    unit_ratios: dict[str, float]
    layer_ratios: dict[str, float]
    target: Target
    predicted_value: float
    predicted_drop: float
    measured_value: float | None = None
    history: list[dict[str, float]] = field(default_factory=list)  # verification iterations

    @property
    def met(self) -> bool:
        """True when the measured value (after pruning) is within the target's tolerance."""
        return self.measured_value is not None and self.target.met_by(self.measured_value)

    def to_recipe(self, *, importance: str = "l2", round_to: int | None = None, min_channels: int | None = None,
                  name: str | None = None, provenance: Mapping[str, Any] | None = None) -> Recipe:
        """The allocation as a prune recipe (local pruning, every other group left whole)."""
        target = {"metric": self.target.metric, "value": round(self.target.value, 6),
                  "tolerance": self.target.tolerance, "predicted": round(self.predicted_value, 6),
                  "predicted_score_drop": round(self.predicted_drop, 6)}
        if self.measured_value is not None:
            target["measured"] = round(self.measured_value, 6)
        return Recipe(pruning_ratio=0.0, importance=importance, layer_ratios=dict(self.layer_ratios),
                      global_pruning=False, round_to=round_to, min_channels=min_channels, name=name, target=target,
                      provenance=dict(provenance or {}))


@dataclass
class _UnitTable:
    """A unit's candidate ratios with predicted drop and saving; ``hull`` indexes their lower convex hull."""

    name: str
    patterns: list[str]
    ratios: np.ndarray
    drops: np.ndarray
    savings: np.ndarray
    hull: list[int]


def allocate(scan: SensitivityResult, target: Target, *, step: float = RATIO_STEP, max_ratio: float | None = None,
             smoothness: float = SMOOTHNESS, required_saving: float | None = None) -> Allocation:
    """Chooses per-unit ratios whose predicted ``target.metric`` reaches ``target.value``.

    Args:
        scan: A sensitivity scan (its ratios bound the allocation: no extrapolation).
        target: Metric and value to reach.
        step: Grid of candidate ratios between the scanned ones (linear interpolation).
        max_ratio: No unit goes above this ratio (default: the largest scanned ratio).
        smoothness: Penalty ``smoothness * ratio**2`` added to the drop; breaks ties (a flat, noisy
            or untrained score) towards spreading the pruning instead of emptying one unit.
        required_saving: Saving to reach (metric units), overriding the one implied by ``target``
            (``allocate_and_verify`` uses it to correct for non-additive savings).

    Raises:
        ValueError: The target cannot be reached with the scanned ratios.
    """
    base = baseline_value(scan, target.metric)
    if target.value >= base:
        raise ValueError(f"target {target.metric}={target.value:.4g} is not below the baseline ({base:.4g}): "
                         f"nothing to prune")
    need = base - target.value if required_saving is None else required_saving
    tables = _unit_tables(scan, target.metric, step, max_ratio, smoothness)
    picks = _greedy_hull(tables, need)
    if picks is None:
        best = sum(float(t.savings[t.hull[-1]]) for t in tables)
        raise ValueError(f"target {target.metric}={target.value:.4g} is out of reach: pruning every unit at its "
                         f"highest scanned ratio is predicted to reach only {base - best:.4g} "
                         f"(baseline {base:.4g}). Scan higher ratios (e.g. --ratios 0.2 0.4 0.6 0.8) or relax "
                         f"the target.")
    unit_ratios = {t.name: round(float(t.ratios[i]), 4) for t, i in zip(tables, picks, strict=True)}
    saving = sum(float(t.savings[i]) for t, i in zip(tables, picks, strict=True))
    drop = sum(float(t.drops[i]) for t, i in zip(tables, picks, strict=True))
    patterns = {t.name: t.patterns for t in tables}
    layer_ratios = {p: r for name, r in unit_ratios.items() if r > 0 for p in patterns[name]}
    return Allocation(unit_ratios={k: v for k, v in unit_ratios.items() if v > 0}, layer_ratios=layer_ratios,
                      target=target, predicted_value=base - saving, predicted_drop=drop)


def _unit_tables(scan: SensitivityResult, metric: str, step: float, max_ratio: float | None,
                 smoothness: float) -> list[_UnitTable]:
    """The tables of every unit that can save anything."""
    tables = (_unit_table(u, scan, metric, step, max_ratio, smoothness) for u in scan.units)
    return [t for t in tables if len(t.hull) > 1]


def _unit_table(unit: Any, scan: SensitivityResult, metric: str, step: float, max_ratio: float | None,
                smoothness: float) -> _UnitTable:
    """Interpolated (ratio, drop, saving) on a grid, made monotone, with its lower convex hull."""
    key, scale = _metric(metric)
    valid = [p for p in unit.points if p.score is not None and getattr(p, key) is not None]
    base_cost = float(scan.baseline[key]) / scale
    known_r = np.array([0.0] + [p.ratio for p in valid])
    known_d = np.array([0.0] + [scan.baseline["score"] - p.score for p in valid])
    known_s = np.array([0.0] + [base_cost - getattr(p, key) / scale for p in valid])
    top = known_r.max() if max_ratio is None else min(known_r.max(), max_ratio)
    grid = np.unique(np.concatenate([np.arange(0.0, top + 1e-9, step), known_r[known_r <= top]]))
    # a larger ratio never helps: running maxima remove measurement noise that says otherwise
    drops = np.maximum.accumulate(np.clip(np.interp(grid, known_r, known_d), 0.0, None)) + smoothness * grid**2
    savings = np.maximum.accumulate(np.clip(np.interp(grid, known_r, known_s), 0.0, None))
    return _UnitTable(unit.name, list(unit.patterns), grid, drops, savings, _lower_hull(savings, drops))


def _lower_hull(x: np.ndarray, y: np.ndarray) -> list[int]:
    """Indices of the lower convex hull of points sorted by x (starting at the origin point)."""
    hull: list[int] = [0]
    for i in range(1, len(x)):
        if x[i] <= x[hull[-1]]:
            continue  # no extra saving: never worth it
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # drop b when it lies on or above the segment a -> i
            if (y[b] - y[a]) * (x[i] - x[a]) >= (y[i] - y[a]) * (x[b] - x[a]):
                hull.pop()
            else:
                break
        hull.append(i)
    return hull


def _greedy_hull(tables: list[_UnitTable], need: float) -> list[int] | None:
    """Walks the hulls, cheapest slope first; returns grid indices per unit (None: unreachable).

    The move that would reach ``need`` is replaced by the cheapest single grid move (of any unit)
    that reaches it, so the target is not overshot by a whole hull segment.
    """
    picks = [0] * len(tables)
    steps = [0] * len(tables)  # position on each hull
    saving = 0.0
    need = need * (1 - 1e-9)  # relative slack: sums of the same savings in another order
    while saving < need:
        best, best_slope = -1, np.inf
        for k, t in enumerate(tables):
            if steps[k] + 1 < len(t.hull):
                i, j = t.hull[steps[k]], t.hull[steps[k] + 1]
                slope = (t.drops[j] - t.drops[i]) / (t.savings[j] - t.savings[i])
                if slope < best_slope:
                    best, best_slope = k, slope
        if best < 0:
            return None
        t = tables[best]
        i, j = t.hull[steps[best]], t.hull[steps[best] + 1]
        if saving + t.savings[j] - t.savings[i] >= need:
            return _finish(tables, picks, need - saving)
        saving += float(t.savings[j] - t.savings[i])
        picks[best], steps[best] = j, steps[best] + 1
    return picks


def _finish(tables: list[_UnitTable], picks: list[int], missing: float) -> list[int]:
    """The one move (any unit, any larger grid ratio) that adds ``missing`` saving at the least drop."""
    best, best_drop = (-1, -1), np.inf
    for k, t in enumerate(tables):
        i = picks[k]
        for j in range(i + 1, len(t.ratios)):
            if t.savings[j] - t.savings[i] >= missing and t.drops[j] - t.drops[i] < best_drop:
                best, best_drop = (k, j), t.drops[j] - t.drops[i]
                break  # drops only grow with j: the first reaching index is this unit's cheapest
    k, j = best
    done = list(picks)
    done[k] = j
    return done


# -- verification by pruning ------------------------------------------------------------------
MeasureFn = Callable[[PruneResult], float]


def allocate_and_verify(scan: SensitivityResult, target: Target, model: nn.Module, adapter: DetectorAdapter, *,
                        img_size: int = IMG_SIZE, measure_fn: MeasureFn | None = None, max_iters: int = 12,
                        prune_settings: Mapping[str, Any] | None = None, step: float = RATIO_STEP,
                        max_ratio: float | None = None, smoothness: float = SMOOTHNESS) -> Allocation:
    """``allocate``, then prunes copies of ``model`` and corrects until the measured value meets the target.

    Args:
        scan: The sensitivity scan (as for ``allocate``).
        target: What to reach (as for ``allocate``).
        model: The unpruned model the scan was made on (left unchanged).
        adapter: Its adapter.
        img_size: Tracing / MAC-counting size (use the scan's).
        measure_fn: ``PruneResult -> value`` in the target's unit; default counts GMACs or params.
            Latency targets need one (e.g. fused latency on the target device).
        max_iters: Pruning trials at most (each prunes one copy).
        prune_settings: Further ``prune_model`` arguments (importance, round_to, ...), as in the scan.
        step: Ratio grid, as for ``allocate``.
        max_ratio: No unit above this ratio, as for ``allocate``.
        smoothness: As for ``allocate``.

    Returns:
        The allocation closest to the target; ``measured_value`` holds what pruning really gave.
        When the target could not be met within tolerance, ``history`` shows the trials.
    """
    measure = measure_fn or _default_measure(target.metric)
    base = baseline_value(scan, target.metric)
    under, over = (0.0, base), None  # (requested saving, measured value) that pruned too little / too much
    request, best, history = base - target.value, None, []
    tables = _unit_tables(scan, target.metric, step, max_ratio, smoothness)
    ceiling = sum(float(t.savings[t.hull[-1]]) for t in tables)  # the most any request can ask for
    for _ in range(max_iters):
        alloc = allocate(scan, target, required_saving=request, step=step, max_ratio=max_ratio,
                         smoothness=smoothness)
        alloc.measured_value = measure(_prune_copy(model, adapter, alloc.layer_ratios, img_size, prune_settings))
        history.append({"requested_saving": request, "predicted": alloc.predicted_value,
                        "measured": alloc.measured_value})
        if best is None or abs(alloc.measured_value - target.value) < abs(best.measured_value - target.value):
            best = alloc
        if abs(alloc.measured_value - target.value) <= target.tolerance * target.value / 2:
            break  # comfortably inside the tolerance; the best trial is kept either way
        if alloc.measured_value > target.value:
            under = (request, alloc.measured_value)
        else:
            over = (request, alloc.measured_value)
        request = _next_request(under, over, target.value, base, ceiling)
        if request is None:
            break
    best.history = history
    return best


def _next_request(under: tuple[float, float], over: tuple[float, float] | None, goal: float, base: float,
                  ceiling: float) -> float | None:
    """The next requested saving: regula falsi inside the bracket, or growth until one is found."""
    lo, lo_value = under
    if over is None:  # savings so far fall short: grow the request by the shortfall, up to the scan's limit
        achieved = base - lo_value
        grow = (base - goal) / achieved if achieved > 0 else 2.0
        nxt = min(lo * min(max(grow, 1.05), 2.0), ceiling)
        return None if nxt <= lo * (1 + 1e-9) else nxt
    hi, hi_value = over
    if hi - lo <= 1e-9 * max(abs(base), 1.0):
        return None
    frac = (lo_value - goal) / (lo_value - hi_value) if lo_value != hi_value else 0.5
    return lo + min(max(frac, 0.1), 0.9) * (hi - lo)  # always shrink the bracket


def _prune_copy(model: nn.Module, adapter: DetectorAdapter, layer_ratios: dict[str, float], img_size: int,
                prune_settings: Mapping[str, Any] | None) -> PruneResult:
    with width_warnings_off():  # the check measures what the pruning achieved
        return prune_model(copy.deepcopy(model), adapter, img_size=img_size, pruning_ratio=0.0,
                           layer_ratios=layer_ratios, **dict(prune_settings or {}))


def _default_measure(metric: str) -> MeasureFn:
    if metric == "gmacs":
        return lambda result: result.macs_after / 1e9
    if metric == "params_m":
        return lambda result: result.params_after / 1e6
    raise ValueError(f"verifying a {metric} target needs measure_fn (e.g. latency of the fused pruned model on "
                     f"the target device)")


def _metric(metric: str) -> tuple[str, float]:
    if metric not in TARGET_METRICS:
        raise ValueError(unknown_name_message("target metric", metric, TARGET_METRICS))
    return TARGET_METRICS[metric]


# -- the uniform baseline -----------------------------------------------------------------------
def uniform_ratio_for_target(model: nn.Module, adapter: DetectorAdapter, target: Target, *, img_size: int = IMG_SIZE,
                             measure_fn: MeasureFn | None = None, max_iters: int = 14,
                             prune_settings: Mapping[str, Any] | None = None) -> tuple[float, float]:
    """The single ``pruning_ratio`` (every group alike) whose pruned model meets ``target``.

    Returns:
        ``(ratio, measured value)``: the bisection's closest trial.
    """
    measure = measure_fn or _default_measure(target.metric)
    lo, hi = 0.0, 0.95
    best = (0.0, float("inf"))
    for _ in range(max_iters):
        ratio = round((lo + hi) / 2, 4)
        result = prune_model(copy.deepcopy(model), adapter, img_size=img_size, pruning_ratio=ratio,
                             **dict(prune_settings or {}))
        value = measure(result)
        if abs(value - target.value) < abs(best[1] - target.value):
            best = (ratio, value)
        if target.met_by(value) and abs(value - target.value) <= 0.01 * target.value:
            break
        lo, hi = (ratio, hi) if value > target.value else (lo, ratio)
    return best
