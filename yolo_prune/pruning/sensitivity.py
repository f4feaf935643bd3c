"""Sensitivity scan: prune one group (or stage) alone at several ratios and measure the damage.

For every unit - a pruning group (coupled convs that lose the same channels), an output-stride
stage, or a user-named set of globs - the scan prunes a copy of the model at each ratio, with
everything else untouched, and records the score (mAP on a validation subset), the MACs and
parameters left and, optionally, the measured latency. The curves tell where channels are
cheap to remove; ``yolo_prune.pruning.allocation`` turns them into per-layer ratios.

The score is any callable ``score_fn(model) -> float`` (higher is better): the CLI passes the
COCO mAP evaluator, tests pass a cheap proxy.
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import fnmatch
import glob
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import torch
import torch_pruning as tp
from torch import nn

from yolo_prune.io import LoadedModel, atomic_path, atomic_write_json, atomic_write_text
from yolo_prune.pruning.pruner import PruningError, prune_model
from yolo_prune.pruning.settings import SENSITIVITY_DEFAULTS as D
from yolo_prune.pruning.widths import width_warnings_off
from yolo_prune.settings import IMG_SIZE

if TYPE_CHECKING:  # annotations only: generic code takes an adapter, it never imports the families
    from yolo_prune.adapters.base import DetectorAdapter

LOGGER = logging.getLogger(__name__)

ScoreFn = Callable[[nn.Module], float]
CostFn = Callable[[nn.Module], float]

UNIT_KINDS = ("group", "stride")
SCORE_SPLITS = ("val", "train")
# prune_model arguments the scan itself decides; everything else may be passed through.
_SCAN_OWNED = ("pruning_ratio", "layer_ratios", "img_size", "dry_run", "global_pruning")


@dataclass
class ScanPoint:
    """One unit pruned alone at one ratio."""

    ratio: float
    score: float | None
    macs: float
    params: int
    pruned_channels: int = 0
    latency_ms: float | None = None
    error: str | None = None  # why this ratio could not be applied (then score is None)


@dataclass
class SensitivityUnit:
    """A set of convs pruned together, with its curve."""

    name: str
    patterns: list[str]  # layer_ratios globs selecting the unit: its groups' root conv names, escaped
    channels: int  # prunable output channels of the unit before pruning
    points: list[ScanPoint] = field(default_factory=list)


@dataclass
class SensitivityResult:
    """A whole scan: the unpruned baseline and one curve per unit."""

    baseline: dict[str, Any]  # score, macs, params, latency_ms (None when not measured)
    units: list[SensitivityUnit]
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (``sensitivity.json``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "SensitivityResult":
        """The inverse of ``to_dict``."""
        units = [SensitivityUnit(name=u["name"], patterns=list(u["patterns"]), channels=int(u["channels"]),
                                 points=[ScanPoint(**p) for p in u["points"]]) for u in values["units"]]
        return cls(baseline=dict(values["baseline"]), units=units, settings=dict(values.get("settings", {})))

    @classmethod
    def load(cls, path: str | Path) -> "SensitivityResult":
        """Reads a ``sensitivity.json`` written by ``save``."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"sensitivity scan {path} does not exist; run 'yolo-prune sensitivity' first")
        values = json.loads(path.read_text())
        if "units" not in values or "baseline" not in values:
            raise ValueError(f"{path} is not a sensitivity scan (no 'units' / 'baseline'); pass the "
                             f"sensitivity.json written by 'yolo-prune sensitivity'")
        return cls.from_dict(values)

    def save(self, out_dir: str | Path, *, plot: bool = True) -> dict[str, Path]:
        """Writes ``sensitivity.json``, ``sensitivity.csv`` and (optionally) ``sensitivity.png``."""
        out_dir = Path(out_dir)
        paths = {"json": atomic_write_json(self.to_dict(), out_dir / "sensitivity.json"),
                 "csv": atomic_write_text(self.to_csv(), out_dir / "sensitivity.csv")}
        if plot:
            paths["png"] = plot_sensitivity(self, out_dir / "sensitivity.png")
        return paths

    def to_csv(self) -> str:
        """One row per (unit, ratio), the baseline as ratio 0 of every unit."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["unit", "patterns", "channels", "ratio", "score", "drop", "gmacs", "params_m",
                         "pruned_channels", "latency_ms", "error"])
        base = self.baseline
        for unit in self.units:
            patterns = " ".join(unit.patterns)
            writer.writerow([unit.name, patterns, unit.channels, 0.0, base["score"], 0.0, base["macs"] / 1e9,
                             base["params"] / 1e6, 0, base.get("latency_ms"), None])
            for p in unit.points:
                drop = None if p.score is None else base["score"] - p.score
                writer.writerow([unit.name, patterns, unit.channels, p.ratio, p.score, drop, p.macs / 1e9,
                                 p.params / 1e6, p.pruned_channels, p.latency_ms, p.error])
        return buffer.getvalue()


def scan_sensitivity(model: nn.Module, adapter: DetectorAdapter, score_fn: ScoreFn, *,
                     ratios: Sequence[float] = D.ratios, units: str | Mapping[str, Sequence[str]] = D.units,
                     img_size: int = IMG_SIZE, latency_fn: CostFn | None = None,
                     prune_settings: Mapping[str, Any] | None = None,
                     progress: Callable[[str], None] | None = LOGGER.info) -> SensitivityResult:
    """Prunes each unit alone at each ratio (on copies) and scores the result.

    Args:
        model: The unpruned float32 model (left unchanged).
        adapter: Its family's adapter.
        score_fn: ``model -> score`` (higher is better), e.g. mAP50-95 on a validation subset.
        ratios: Pruning ratios to try, each in (0, 1).
        units: ``"group"`` (every pruning group), ``"stride"`` (groups by output stride), or
            ``{stage name: [module-name globs]}``.
        img_size: Tracing and MAC-counting input size.
        latency_fn: Optional ``model -> latency_ms`` measured for the baseline and every point.
        prune_settings: Further ``prune_model`` arguments (importance, round_to, ...).
        progress: Called with one line per point (None: silent).

    Returns:
        The baseline and one curve per unit, in unit order.
    """
    ratios = _check_ratios(ratios)
    settings = _check_prune_settings(prune_settings)
    specs = list_units(model, adapter, units, img_size=img_size, prune_settings=settings)
    example = torch.zeros(1, 3, img_size, img_size, device=_device(model))
    macs, params = tp.utils.count_ops_and_params(model, example)  # counts on an eval-mode copy
    baseline = {"score": float(score_fn(model)), "macs": float(macs), "params": int(params),
                "latency_ms": None if latency_fn is None else float(latency_fn(model))}
    for k, unit in enumerate(specs):
        for ratio in ratios:
            point = scan_point(model, adapter, unit, ratio, score_fn, img_size=img_size, latency_fn=latency_fn,
                               prune_settings=settings, baseline=baseline)
            unit.points.append(point)
            if progress is not None:
                shown = "skipped: " + point.error if point.error else f"score {point.score:.4f}"
                progress(f"[{k + 1}/{len(specs)}] {unit.name} ratio {ratio:g}: {shown} "
                         f"(GMACs {point.macs / 1e9:.3f})")
    record = {"ratios": ratios, "units": units if isinstance(units, str) else {k: list(v) for k, v in units.items()},
              "img_size": img_size, "latency": latency_fn is not None, **settings}
    return SensitivityResult(baseline=baseline, units=specs, settings=record)


def scan_point(model: nn.Module, adapter: DetectorAdapter, unit: SensitivityUnit, ratio: float, score_fn: ScoreFn,
               *, img_size: int, latency_fn: CostFn | None, prune_settings: Mapping[str, Any],
               baseline: Mapping[str, Any]) -> ScanPoint:
    """Prunes a copy of ``model`` with only ``unit`` at ``ratio`` and measures it."""
    pruned = copy.deepcopy(model)
    try:
        with width_warnings_off():  # a floor holding part of the unit shows in the point's MACs
            result = prune_model(pruned, adapter, img_size=img_size, pruning_ratio=0.0,
                                 layer_ratios={p: ratio for p in unit.patterns}, **prune_settings)
    except PruningError as err:
        # e.g. a 4-channel group at ratio 0.1 loses nothing: the unit cannot be pruned this far
        return ScanPoint(ratio=ratio, score=None, macs=baseline["macs"], params=baseline["params"], error=str(err))
    lost = sum(result.channels_before[n] - result.channels_after.get(n, 0) for n in _unit_roots(unit, result))
    return ScanPoint(ratio=ratio, score=float(score_fn(result.model)), macs=float(result.macs_after),
                     params=int(result.params_after), pruned_channels=int(lost),
                     latency_ms=None if latency_fn is None else float(latency_fn(result.model)))


def list_units(model: nn.Module, adapter: DetectorAdapter, units: str | Mapping[str, Sequence[str]] = D.units, *,
               img_size: int = IMG_SIZE, prune_settings: Mapping[str, Any] | None = None) -> list[SensitivityUnit]:
    """The units a scan visits (without points), from a dry run of the pruner on a copy."""
    settings = {k: v for k, v in (prune_settings or {}).items() if k in ("importance", "round_to", "seed")}
    if settings.get("importance") == "taylor":
        settings["importance"] = "l2"  # listing groups needs no gradients; the ranking is irrelevant here
    dry = prune_model(copy.deepcopy(model), adapter, img_size=img_size, pruning_ratio=0.5, dry_run=True, **settings)
    groups = [g for g in dry.groups if g.pruned > 0]
    if not groups:
        raise PruningError("the pruner found no prunable group in this model; check the adapter's ignored_layers")
    if isinstance(units, Mapping):
        return _stage_units(groups, units)
    if units == "group":
        return [SensitivityUnit(name=g.root, patterns=[glob.escape(g.root)], channels=g.channels) for g in groups]
    if units == "stride":
        strides = _output_strides(model, adapter, [g.root for g in groups], img_size)
        by_stride: dict[int, list] = {}
        for g in groups:
            by_stride.setdefault(strides[g.root], []).append(g)
        return [SensitivityUnit(name=f"stride{s}", patterns=[glob.escape(g.root) for g in gs],
                                channels=sum(g.channels for g in gs)) for s, gs in sorted(by_stride.items())]
    raise ValueError(f"units must be one of {', '.join(UNIT_KINDS)} or a {{stage: [globs]}} mapping, got {units!r}")


def _stage_units(groups: list, stages: Mapping[str, Sequence[str]]) -> list[SensitivityUnit]:
    """User stages: each a list of globs; its channels are those of the groups whose root it matches."""
    units = []
    for name, globs in stages.items():
        if isinstance(globs, str):
            globs = [globs]
        matched = [g for g in groups if any(fnmatch.fnmatchcase(g.root, p) for p in globs)]
        if not matched:
            roots = ", ".join(g.root for g in groups[:6])
            raise ValueError(f"stage {name!r} ({list(globs)}) matches no pruning group root; roots look like: {roots}")
        units.append(SensitivityUnit(name=str(name), patterns=[glob.escape(g.root) for g in matched],
                                     channels=sum(g.channels for g in matched)))
    return units


def _unit_roots(unit: SensitivityUnit, result: Any) -> list[str]:
    return [n for n in result.channels_before if any(fnmatch.fnmatchcase(n, p) for p in unit.patterns)]


def _output_strides(model: nn.Module, adapter: DetectorAdapter, names: list[str], img_size: int) -> dict[str, int]:
    """Output stride of each named conv, from one forward pass with hooks (on a prepared copy)."""
    prepared = adapter.prepare_for_pruning(copy.deepcopy(model)).eval()
    modules = dict(prepared.named_modules())
    heights: dict[str, int] = {}

    def recorder(name: str) -> Callable:
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            heights.setdefault(name, int(output.shape[-2]))
        return hook

    hooks = [modules[n].register_forward_hook(recorder(n)) for n in names if n in modules]
    try:
        with torch.no_grad():
            prepared(torch.zeros(1, 3, img_size, img_size, device=_device(model)))
    finally:
        for hook in hooks:
            hook.remove()
    return {n: img_size // heights[n] if n in heights else 0 for n in names}


def _check_ratios(ratios: Sequence[float]) -> list[float]:
    ratios = sorted({float(r) for r in ratios})
    if not ratios or any(not 0.0 < r < 1.0 for r in ratios):
        raise ValueError(f"scan ratios must be in (0, 1), e.g. 0.1 0.3 0.5; got {list(ratios)}")
    return ratios


def _check_prune_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    settings = dict(settings or {})
    owned = sorted(set(settings) & set(_SCAN_OWNED))
    if owned:
        raise ValueError(f"prune_settings may not set {', '.join(owned)}: the scan prunes one unit at a time, "
                         f"locally, at its own ratios")
    return settings


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


# -- score and latency functions for real models (COCO mAP on a val subset, fused latency) ----------
def make_map_score_fn(loaded: LoadedModel, adapter: DetectorAdapter, data: str | Path, *, img_size: int,
                      max_images: int | None, batch_size: int = D.batch_size, device: str = D.device,
                      metric: str = D.metric, workers: int = D.workers,
                      split: str = D.split) -> Callable[[nn.Module], float]:
    """``model -> mAP`` on the first ``max_images`` images of the data's ``split`` (``adapter.decode``).

    ``split="train"`` (without augmentation) keeps the val split unseen by the allocation, so that
    a recipe chosen from the scan is judged on images that did not choose it.
    """
    from yolo_prune.data import CocoDetectionDataset, load_data_config
    from yolo_prune.evaluation import evaluate

    if split not in SCORE_SPLITS:
        raise ValueError(f"the scan scores on the train or val split, got {split!r}: pass --split train or val")
    cfg = load_data_config(data)
    images, ann = (cfg.val_images, cfg.val_ann) if split == "val" else (cfg.train_images, cfg.train_ann)
    if images is None:
        raise ValueError(f"{data} has no {split} split; the scan needs one to score pruned models (or pass --split)")
    stride = max(32, int(max(loaded.stride)) if loaded.stride else 32)
    dataset = CocoDetectionDataset(images, ann, img_size=img_size, augment=False, rect=True,
                                   batch_size=batch_size, stride=stride)

    def score(model: nn.Module) -> float:
        metrics = evaluate(model, dataset, decode=adapter.decode, batch_size=batch_size, device=device,
                           workers=workers, max_images=max_images)
        return float(metrics[metric])

    return score


def make_latency_fn(adapter: DetectorAdapter, img_size: int, *, device: str = D.device,
                    runs: int = 10) -> Callable[[nn.Module], float]:
    """``model -> median batch-1 forward latency (ms)`` of a fused copy on ``device``.

    NMS is left out: pruning changes the network, not the post-processing.
    """
    from yolo_prune.benchmark import measure_latency

    def latency(model: nn.Module) -> float:
        timing = measure_latency(model, img_size, batch=1, device=device, warmup=3, runs=runs, fuse=adapter.fuse,
                                 decode=adapter.decode, nms=False)
        return float(timing["latency_ms_median"])

    return latency


_MARKERS = ("o", "s", "^", "v", "D", "x", "+", "*", "P", "h")
_LINESTYLES = ("-", "--", ":", "-.")
_METRIC_WORDS = {"map50_95": "mAP50-95", "map50": "mAP50", "map75": "mAP75", "loss": "loss"}


def plot_sensitivity(result: SensitivityResult, path: str | Path, *, per_panel: int = 10) -> Path:
    """Score vs pruning ratio, one line per unit (panels of ``per_panel`` units), baseline dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chunks = [result.units[i:i + per_panel] for i in range(0, len(result.units), per_panel)] or [[]]
    cols = min(len(chunks), 3)
    rows = -(-len(chunks) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 4 * rows), squeeze=False)
    base = result.baseline["score"]
    metric = result.settings.get("metric", "score")
    for ax, chunk in zip(axes.flat, chunks, strict=False):
        for k, unit in enumerate(chunk):
            pts = [(0.0, base)] + [(p.ratio, p.score) for p in unit.points if p.score is not None]
            # lines of insensitive units coincide: markers and dashes tell them apart
            ax.plot([r for r, _ in pts], [s for _, s in pts], marker=_MARKERS[k % len(_MARKERS)], ms=4,
                    ls=_LINESTYLES[k // len(_MARKERS) % len(_LINESTYLES)], lw=1.2, alpha=0.85, label=unit.name)
        ax.axhline(base, ls="--", c="gray", lw=1, label="unpruned")
        ax.set_xlabel("fraction of this unit's channels removed (the rest unpruned)")
        ax.set_ylabel(f"{_METRIC_WORDS.get(metric, metric)} after pruning")
        ax.legend(fontsize=6, loc="lower left")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(chunks):]:
        ax.axis("off")
    fig.suptitle("Pruning sensitivity per unit")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(path)
