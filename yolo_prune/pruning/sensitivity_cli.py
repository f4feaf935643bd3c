"""``yolo-prune sensitivity`` / ``scripts/sensitivity.py``: scan, then (optionally) allocate a recipe.

    yolo-prune sensitivity --weights yolov7-tiny.pt --data data.yaml --max-images 100 \\
        --ratios 0.2 0.4 0.6 --reduction 3 --recipe-out configs/prune/tiny-3x.yaml
    yolo-prune prune --weights yolov7-tiny.pt --recipe configs/prune/tiny-3x.yaml

A saved scan can be re-allocated for another target without scanning again (``--from-scan``).
"""
from __future__ import annotations

import argparse
import datetime
from pathlib import Path
from typing import Any

import yaml

from yolo_prune import api
from yolo_prune.adapters.base import DetectorAdapter, LoadedModel
from yolo_prune.cli import add_model_source_args
from yolo_prune.io import atomic_write_json, atomic_write_text
from yolo_prune.pruning.allocation import (RATIO_STEP, TARGET_METRICS, Allocation, Target, allocate_and_verify,
                                           baseline_value, target_from_reduction)
from yolo_prune.pruning.importance import IMPORTANCES
from yolo_prune.pruning.recipe import save_recipe
from yolo_prune.pruning.sensitivity import (UNIT_KINDS, SensitivityResult, make_latency_fn, make_map_score_fn,
                                            scan_sensitivity)
from yolo_prune.reporting import format_table

METRICS = ("map50_95", "map50", "map75")


def add_sensitivity_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the sensitivity flags to ``parser`` (shared by the script and the CLI)."""
    src = parser.add_argument_group("model")
    add_model_source_args(src, weights_help="checkpoint to scan (official YOLOv7 or ultralytics .pt)",
                          cfg_help="model cfg: builds a random model when --weights is absent")
    data = parser.add_argument_group("evaluation")
    data.add_argument("--data", type=Path, help="data yaml; its val split scores every point")
    data.add_argument("--max-images", type=int, default=100, help="score on the first N val images (speed)")
    data.add_argument("--metric", default="map50_95", choices=METRICS, help="score of each point")
    data.add_argument("--batch", "--batch-size", type=int, default=16, help="evaluation batch size")
    data.add_argument("--device", default="cpu", help="cpu, 0, cuda:1 (evaluation and latency)")
    data.add_argument("--workers", type=int, default=0, help="data-loading processes")
    scan = parser.add_argument_group("scan")
    scan.add_argument("--ratios", type=float, nargs="+", default=[0.2, 0.4, 0.6], help="ratios tried per unit")
    scan.add_argument("--units", default="group",
                      help=f"{' | '.join(UNIT_KINDS)} | a yaml of {{stage name: [module globs]}}")
    scan.add_argument("--importance", default="l2", help=f"criterion: {', '.join(IMPORTANCES.names())}")
    scan.add_argument("--round-to", type=int, default=None, help="keep channel counts multiples of this")
    scan.add_argument("--img", "--img-size", type=int, default=640, help="input size for evaluation, tracing and MACs")
    scan.add_argument("--latency", action="store_true", help="also measure fused latency of every point on --device")
    scan.add_argument("--from-scan", type=Path, help="skip the scan: allocate from this sensitivity.json")
    alloc = parser.add_argument_group("allocation (optional)")
    target = alloc.add_mutually_exclusive_group()
    target.add_argument("--target-gmacs", type=float, help="reach this many GMACs")
    target.add_argument("--target-params-m", type=float, help="reach this many million parameters")
    target.add_argument("--target-latency-ms", type=float, help="reach this latency (needs a scan with --latency)")
    target.add_argument("--reduction", type=float, help="reach baseline / R of --reduction-metric, e.g. 3")
    alloc.add_argument("--reduction-metric", default="gmacs", choices=list(TARGET_METRICS))
    alloc.add_argument("--tolerance", type=float, default=0.05, help="relative tolerance of the target")
    alloc.add_argument("--step", type=float, default=RATIO_STEP, help="ratio grid of the allocation")
    alloc.add_argument("--max-ratio", type=float, default=None, help="no unit above this ratio")
    alloc.add_argument("--recipe-out", type=Path, help="recipe yaml to write (default: <out>/recipe.yaml)")
    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, help="output folder (default: runs/sensitivity/<model>)")
    out.add_argument("--force", action="store_true", help="overwrite existing outputs")
    return parser


def run_sensitivity(args: argparse.Namespace) -> dict[str, Any]:
    """Runs the scan (or reads one) and the optional allocation; returns a JSON-ready summary."""
    out = args.out or Path("runs/sensitivity") / Path(str(args.weights or args.cfg or "model")).stem
    _check_outputs(out, args)
    loaded = api.load(args.weights, cfg=args.cfg, family=args.family, trust=args.trust_checkpoint, nc=_data_nc(args))
    adapter = api.adapter_of(loaded)
    atomic_write_text(yaml.safe_dump(_plain_args(args), sort_keys=False), out / "args.yaml")
    summary: dict[str, Any] = {"out": out}
    if args.from_scan is not None:
        scan = SensitivityResult.load(args.from_scan)
    else:
        scan = _run_scan(loaded, adapter, args)
        summary.update({f"scan_{k}": v for k, v in scan.save(out).items()})
        print(f"scan: {summary['scan_json']}, {summary['scan_png']}")
    target = _target(scan, args)
    if target is not None:
        summary.update(_run_allocation(scan, target, loaded, adapter, args, out))
    return summary


def _run_scan(loaded: LoadedModel, adapter: DetectorAdapter, args: argparse.Namespace) -> SensitivityResult:
    if args.data is None:
        raise ValueError("the scan scores models on a validation set: pass --data path/to/data.yaml "
                         "(or --from-scan sensitivity.json to allocate from an earlier scan)")
    score_fn = make_map_score_fn(loaded, args.data, img_size=args.img, max_images=args.max_images,
                                 batch_size=args.batch, device=args.device, metric=args.metric, workers=args.workers)
    latency_fn = make_latency_fn(adapter, args.img, device=args.device) if args.latency else None
    scan = scan_sensitivity(loaded.model, adapter, score_fn, ratios=args.ratios, units=_units(args.units),
                            img_size=args.img, latency_fn=latency_fn,
                            prune_settings={"importance": args.importance, "round_to": args.round_to})
    scan.settings.update({"metric": args.metric, "max_images": args.max_images, "weights": args.weights,
                          "cfg": args.cfg, "data": args.data})
    return scan


def _run_allocation(scan: SensitivityResult, target: Target, loaded: LoadedModel, adapter: DetectorAdapter,
                    args: argparse.Namespace, out: Path) -> dict[str, Any]:
    img_size = int(scan.settings.get("img_size", args.img))
    measure_fn = None
    if target.metric == "latency_ms":
        latency = make_latency_fn(adapter, img_size, device=args.device)

        def measure_fn(result: Any) -> float:
            return latency(result.model)
    prune_settings = {"importance": scan.settings.get("importance", args.importance),
                      "round_to": scan.settings.get("round_to", args.round_to)}
    alloc = allocate_and_verify(scan, target, loaded.model, adapter, img_size=img_size, measure_fn=measure_fn,
                                prune_settings=prune_settings, step=args.step, max_ratio=args.max_ratio)
    print(format_allocation(alloc, baseline_value(scan, target.metric)))
    if not alloc.met:
        print(f"warning: the best allocation reaches {target.metric}={alloc.measured_value:.4g}, outside "
              f"{target.tolerance:.0%} of {target.value:.4g}; scan more or finer ratios (--ratios) or lower --step")
    recipe_path = args.recipe_out or out / "recipe.yaml"
    scan_path = args.from_scan or out / "sensitivity.json"
    recipe = alloc.to_recipe(name=recipe_path.stem, provenance=_provenance(scan, args, scan_path), **prune_settings)
    save_recipe(recipe, recipe_path, header=f"made by 'yolo-prune sensitivity' for {target.metric}={target.value:.4g}; "
                                            f"apply with: yolo-prune prune --recipe {recipe_path}")
    alloc_path = atomic_write_json({"unit_ratios": alloc.unit_ratios, "target": vars(target),
                                    "predicted_value": alloc.predicted_value, "predicted_drop": alloc.predicted_drop,
                                    "measured_value": alloc.measured_value, "met": alloc.met,
                                    "history": alloc.history}, out / "allocation.json")
    print(f"recipe: {recipe_path} (allocation details: {alloc_path})")
    return {"recipe": recipe_path, "allocation": alloc_path, "measured": alloc.measured_value, "met": alloc.met}


def format_allocation(alloc: Allocation, baseline: float) -> str:
    """Unit ratios plus the predicted and measured result, as a terminal table."""
    rows = [[name, ratio] for name, ratio in sorted(alloc.unit_ratios.items(), key=lambda kv: -kv[1])]
    table = format_table(rows, ["unit", "ratio"]) if rows else "(no unit pruned)"
    t = alloc.target
    return (f"{table}\n{t.metric}: baseline {baseline:.4g}, target {t.value:.4g}, predicted "
            f"{alloc.predicted_value:.4g}, measured {alloc.measured_value:.4g}; predicted score drop "
            f"{alloc.predicted_drop:.4f}")


def _target(scan: SensitivityResult, args: argparse.Namespace) -> Target | None:
    for metric, value in (("gmacs", args.target_gmacs), ("params_m", args.target_params_m),
                          ("latency_ms", args.target_latency_ms)):
        if value is not None:
            return Target(metric, value, args.tolerance)
    if args.reduction is not None:
        return target_from_reduction(scan, args.reduction_metric, args.reduction, tolerance=args.tolerance)
    return None


def _data_nc(args: argparse.Namespace) -> int | None:
    """Classes of --data, for a model built from --cfg (a checkpoint brings its own)."""
    if args.weights is not None or args.data is None:
        return None
    from yolo_prune.data import load_data_config

    return len(load_data_config(args.data).names)


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


def _check_outputs(out: Path, args: argparse.Namespace) -> None:
    taken = [p for p in (out / "sensitivity.json", args.recipe_out or out / "recipe.yaml") if p.exists()]
    if args.from_scan is not None:
        taken = [p for p in taken if p.name != "sensitivity.json"]
    if taken and not args.force:
        raise FileExistsError(f"{taken[0]} already exists; pass --force to overwrite it or choose another --out")


def _provenance(scan: SensitivityResult, args: argparse.Namespace, scan_path: Path) -> dict[str, Any]:
    s = scan.settings
    return {"created_by": "yolo-prune sensitivity", "date": datetime.date.today().isoformat(),
            "model": str(args.weights or args.cfg or s.get("weights") or s.get("cfg")), "data": str(s.get("data")),
            "metric": s.get("metric"), "baseline_score": scan.baseline["score"], "scan_ratios": s.get("ratios"),
            "units": s.get("units"), "img_size": s.get("img_size"),
            "scan": str(scan_path)}


def _plain_args(args: argparse.Namespace) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "func"}
