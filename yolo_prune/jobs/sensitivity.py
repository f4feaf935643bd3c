"""The sensitivity job: scan every unit's pruning damage, then (optionally) allocate a recipe.

    run_sensitivity(SensitivitySettings(weights="yolov7-tiny.pt", data="data.yaml", max_images=100,
                                        ratios=(0.2, 0.4, 0.6), reduction=3))
    # then: yolo-prune prune --weights yolov7-tiny.pt --recipe runs/sensitivity/yolov7-tiny/recipe.yaml

A saved scan can be re-allocated for another target without scanning again (``from_scan``).
Outputs in ``out``: ``args.yaml`` (the resolved settings), ``sensitivity.json/.csv/.png``,
``recipe.yaml`` and ``allocation.json``.
"""
from __future__ import annotations

import datetime
import logging
from pathlib import Path
from typing import Any, Sequence

import yaml

from yolo_prune.adapters import DetectorAdapter, get_adapter, load_model
from yolo_prune.io import LoadedModel, atomic_write_json
from yolo_prune.pruning.allocation import Allocation, Target, allocate_and_verify, baseline_value, target_from_reduction
from yolo_prune.pruning.recipe import save_recipe
from yolo_prune.pruning.sensitivity import (
    UNIT_KINDS,
    SensitivityResult,
    make_latency_fn,
    make_map_score_fn,
    scan_sensitivity,
)
from yolo_prune.pruning.settings import SensitivitySettings

LOGGER = logging.getLogger(__name__)


def run_sensitivity(settings: SensitivitySettings) -> dict[str, Any]:
    """Runs the scan (or reads one) and the optional allocation; returns a JSON-ready summary.

    The summary has ``out``, the scan's files (``scan_json`` ...) and, after an allocation,
    ``recipe``, ``allocation`` (paths), ``measured``, ``met``, ``result`` (the ``Allocation``) and
    ``baseline`` (the unpruned model's value of the target metric).
    """
    s = settings
    out = Path(s.out) if s.out is not None else Path("runs/sensitivity") / Path(str(s.weights or s.cfg or "model")).stem
    _check_outputs(out, s)
    loaded = load_model(s.weights, cfg=s.cfg, family=s.family, trust=s.trust, nc=_data_nc(s))
    adapter = get_adapter(loaded.family)
    s.save(out / "args.yaml")
    summary: dict[str, Any] = {"out": out}
    if s.from_scan is not None:
        scan = SensitivityResult.load(s.from_scan)
    else:
        scan = _run_scan(loaded, adapter, s)
        summary.update({f"scan_{k}": v for k, v in scan.save(out).items()})
    target = _target(scan, s)
    if target is not None:
        summary.update(_run_allocation(scan, target, loaded, adapter, s, out))
    return summary


def stage_allocation(weights: str | Path, data: str | Path, out: Path, *, reduction: float,
                     ratios: Sequence[float] = (0.3, 0.5, 0.7), images: int = 100, img_size: int,
                     importance: str = "l2", round_to: int | None = None, min_channels: int | None = None,
                     tolerance: float = 0.02, scan: Path | None = None, **evaluation: Any) -> Path:
    """A recipe of per-stride-stage ratios for ``reduction`` x fewer GMACs; returns its path.

    The main job's allocation (and the recovery table's): each output-stride stage is pruned alone
    at each of ``ratios`` (the largest caps the allocation), scored on the first ``images``
    unaugmented *train* images, so that the val split which judges the pruned model did not
    choose its ratios. A recipe already in ``out`` is returned as it is and a finished scan is
    reused, so an interrupted job continues. ``scan``: a finished scan of the same model, data and
    scan settings to allocate from instead (another target's; default: the one in ``out``, if any).
    ``evaluation``: ``batch_size``, ``device``, ``workers``, ``trust``.
    """
    recipe, scan = out / "recipe.yaml", scan or out / "sensitivity.json"
    if recipe.exists():
        return recipe
    summary = run_sensitivity(SensitivitySettings(
        weights=weights, data=data, split="train", max_images=images, img_size=img_size, ratios=tuple(ratios),
        units="stride", importance=importance, round_to=round_to, min_channels=min_channels, reduction=reduction,
        tolerance=tolerance,
        out=out, force=True, from_scan=scan if scan.exists() else None, **evaluation))
    return Path(summary["recipe"])


def _run_scan(loaded: LoadedModel, adapter: DetectorAdapter, s: SensitivitySettings) -> SensitivityResult:
    if s.data is None:
        raise ValueError("the scan scores models on a validation set: pass --data path/to/data.yaml "
                         "(or --from-scan sensitivity.json to allocate from an earlier scan)")
    score_fn = make_map_score_fn(loaded, adapter, s.data, img_size=s.img_size, max_images=s.max_images,
                                 batch_size=s.batch_size, device=s.device, metric=s.metric, workers=s.workers,
                                 split=s.split)
    latency_fn = make_latency_fn(adapter, s.img_size, device=s.device) if s.latency else None
    scan = scan_sensitivity(loaded.model, adapter, score_fn, ratios=s.ratios, units=_units(s.units),
                            img_size=s.img_size, latency_fn=latency_fn,
                            prune_settings=_prune_settings(s))
    scan.settings.update({"metric": s.metric, "split": s.split, "max_images": s.max_images, "weights": s.weights,
                          "cfg": s.cfg, "data": s.data})
    return scan


def _prune_settings(s: SensitivitySettings) -> dict[str, Any]:
    """What every scan point, the allocation's check and its recipe prune with (a scan keeps its own)."""
    settings = {"importance": s.importance, "round_to": s.round_to}
    return settings | ({"min_channels": s.min_channels} if s.min_channels is not None else {})


def _run_allocation(scan: SensitivityResult, target: Target, loaded: LoadedModel, adapter: DetectorAdapter,
                    s: SensitivitySettings, out: Path) -> dict[str, Any]:
    img_size = int(scan.settings.get("img_size", s.img_size))
    measure_fn = None
    if target.metric == "latency_ms":
        latency = make_latency_fn(adapter, img_size, device=s.device)

        def measure_fn(result: Any) -> float:
            return latency(result.model)
    prune_settings = {k: scan.settings.get(k, v) for k, v in _prune_settings(s).items()}
    alloc = allocate_and_verify(scan, target, loaded.model, adapter, img_size=img_size, measure_fn=measure_fn,
                                prune_settings=prune_settings, step=s.step, max_ratio=s.max_ratio)
    if not alloc.met:
        LOGGER.warning("the best allocation reaches %s=%.4g, outside %.0f%% of %.4g; scan more or finer ratios "
                       "(--ratios) or lower --step", target.metric, alloc.measured_value, 100 * target.tolerance,
                       target.value)
    recipe_path = Path(s.recipe_out) if s.recipe_out is not None else out / "recipe.yaml"
    scan_path = s.from_scan or out / "sensitivity.json"
    recipe = alloc.to_recipe(name=recipe_path.stem, provenance=_provenance(scan, s, scan_path), **prune_settings)
    save_recipe(recipe, recipe_path, header=f"made by 'yolo-prune sensitivity' for {target.metric}={target.value:.4g}; "
                                            f"apply with: yolo-prune prune --recipe {recipe_path}")
    alloc_path = atomic_write_json(_allocation_record(alloc, target), out / "allocation.json")
    return {"recipe": recipe_path, "allocation": alloc_path, "measured": alloc.measured_value, "met": alloc.met,
            "result": alloc, "baseline": baseline_value(scan, target.metric)}


def _allocation_record(alloc: Allocation, target: Target) -> dict[str, Any]:
    return {"unit_ratios": alloc.unit_ratios, "target": vars(target), "predicted_value": alloc.predicted_value,
            "predicted_drop": alloc.predicted_drop, "measured_value": alloc.measured_value, "met": alloc.met,
            "history": alloc.history}


def _target(scan: SensitivityResult, s: SensitivitySettings) -> Target | None:
    for metric, value in (("gmacs", s.target_gmacs), ("params_m", s.target_params_m),
                          ("latency_ms", s.target_latency_ms)):
        if value is not None:
            return Target(metric, value, s.tolerance)
    if s.reduction is not None:
        return target_from_reduction(scan, s.reduction_metric, s.reduction, tolerance=s.tolerance)
    return None


def _data_nc(s: SensitivitySettings) -> int | None:
    """Classes of ``data``, for a model built from ``cfg`` (a checkpoint brings its own)."""
    if s.weights is not None or s.data is None:
        return None
    from yolo_prune.data import load_data_config

    return len(load_data_config(s.data).names)


def _units(value: str) -> str | dict[str, list[str]]:
    if value in UNIT_KINDS:
        return value
    path = Path(value)
    if not path.is_file():
        raise ValueError(f"--units {value!r} is neither {' nor '.join(UNIT_KINDS)} nor a stages yaml file")
    stages = yaml.safe_load(path.read_text())
    if not isinstance(stages, dict) or not stages:
        raise ValueError(f"--units {path} must map stage names to module globs, e.g. 'backbone: [model.[0-9].*]'")
    return {str(k): [v] if isinstance(v, str) else list(v) for k, v in stages.items()}


def _check_outputs(out: Path, s: SensitivitySettings) -> None:
    recipe = Path(s.recipe_out) if s.recipe_out is not None else out / "recipe.yaml"
    taken = [p for p in (out / "sensitivity.json", recipe) if p.exists()]
    if s.from_scan is not None:
        taken = [p for p in taken if p.name != "sensitivity.json"]
    if taken and not s.force:
        raise FileExistsError(f"{taken[0]} already exists; pass --force to overwrite it or choose another --out")


def _provenance(scan: SensitivityResult, s: SensitivitySettings, scan_path: Path) -> dict[str, Any]:
    settings = scan.settings
    return {"created_by": "yolo-prune sensitivity", "date": datetime.date.today().isoformat(),
            "model": str(s.weights or s.cfg or settings.get("weights") or settings.get("cfg")),
            "data": str(settings.get("data")), "split": settings.get("split"), "metric": settings.get("metric"),
            "baseline_score": scan.baseline["score"], "scan_ratios": settings.get("ratios"),
            "units": settings.get("units"), "img_size": settings.get("img_size"), "scan": str(scan_path)}
