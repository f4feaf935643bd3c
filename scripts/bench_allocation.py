#!/usr/bin/env python3
"""Sensitivity-allocated recipe vs uniform ratio at equal GMACs, after the same fine-tune budget.

    python scripts/bench_allocation.py                       # synthetic set, yolov7-tiny, 3x fewer GMACs
    python scripts/bench_allocation.py --baseline runs/demo/baseline/weights/best.pt --data runs/demo/data/data.yaml
    python scripts/bench_allocation.py --baseline-epochs 2 --ft-epochs 1 --scan-images 16 --units stride  # smoke

Steps: (1) the synthetic shapes set (unless --data), (2) a trained baseline (unless --baseline),
(3) a sensitivity scan on --scan-images val images, (4) a recipe allocated for baseline GMACs / --reduction,
verified by pruning, and the uniform ratio whose pruned model has the same GMACs, (5) both pruned
models fine-tuned with the same budget and evaluated on the whole val split. Prints the two side by
side and writes ``bench.json``, the recipe and a report page into --work.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from yolo_prune import api  # noqa: E402
from yolo_prune.cli.sensitivity import format_allocation  # noqa: E402
from yolo_prune.io import atomic_write_json  # noqa: E402
from yolo_prune.pruning.allocation import Target, allocate_and_verify, target_from_reduction, uniform_ratio_for_target  # noqa: E402
from yolo_prune.pruning.recipe import save_recipe  # noqa: E402
from yolo_prune.pruning.sensitivity import SensitivityResult, make_map_score_fn, scan_sensitivity  # noqa: E402
from yolo_prune.reporting import format_table  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's flags."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("runs/bench_allocation"), help="work folder (reused on re-runs)")
    p.add_argument("--data", type=Path, help="data yaml (default: the synthetic shapes set in --work)")
    p.add_argument("--baseline", type=Path, help="trained checkpoint (default: train --cfg for --baseline-epochs)")
    p.add_argument("--cfg", default="yolov7-tiny")
    p.add_argument("--img", type=int, default=256)
    p.add_argument("--synthetic-train", type=int, default=400)
    p.add_argument("--synthetic-val", type=int, default=100)
    p.add_argument("--baseline-epochs", type=int, default=30)
    p.add_argument("--ft-epochs", type=int, default=10, help="fine-tune budget, the same for both models")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--reduction", type=float, default=3.0, help="target: baseline GMACs / this")
    p.add_argument("--ratios", type=float, nargs="+", default=[0.3, 0.5, 0.7], help="scan ratios")
    p.add_argument("--units", default="group", help="group | stride (faster)")
    p.add_argument("--scan-images", type=int, default=50, help="val images scoring each scan point")
    p.add_argument("--importance", default="l2")
    p.add_argument("--round-to", type=int, default=8)
    p.add_argument("--device", default="")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the comparison; prints the table and returns what ``bench.json`` holds."""
    args = parse_args(argv)
    started = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    data = args.data or synthetic_data(args)
    baseline = args.baseline or train(args, data, args.work / "baseline", cfg=args.cfg, epochs=args.baseline_epochs)
    loaded = api.load(baseline)
    adapter = api.adapter_of(loaded)
    device = args.device or ("cuda:0" if _cuda() else "cpu")
    prune_settings = {"importance": args.importance, "round_to": args.round_to}
    scan = sensitivity(args, loaded, data, device, prune_settings)
    # uniform first: with round_to its GMACs move in steps, so the allocation then aims at exactly its value
    ratio, uniform_gmacs = uniform_ratio_for_target(loaded.model, adapter,
                                                    target_from_reduction(scan, "gmacs", args.reduction),
                                                    img_size=args.img, prune_settings=prune_settings)
    target = Target("gmacs", uniform_gmacs, tolerance=0.02)
    alloc = allocate_and_verify(scan, target, loaded.model, adapter, img_size=args.img, prune_settings=prune_settings)
    print(format_allocation(alloc, scan.baseline["macs"] / 1e9))
    recipe = alloc.to_recipe(name="allocated", provenance={"created_by": "scripts/bench_allocation.py"},
                             **prune_settings)
    save_recipe(recipe, args.work / "recipe-allocated.yaml")
    gap = alloc.measured_value / uniform_gmacs - 1
    print(f"uniform ratio {ratio:.3f} -> {uniform_gmacs:.4f} GMACs; allocated -> {alloc.measured_value:.4f} GMACs "
          f"({gap:+.1%}; baseline {scan.baseline['macs'] / 1e9:.4f})")
    if not alloc.met:
        print("warning: the allocated model's GMACs differ from the uniform one's by more than 2%; scan more "
              "ratios (--ratios) or use --units group for a finer allocation")
    candidates = {"uniform": {"pruning_ratio": ratio, **prune_settings}, "allocated": recipe.prune_kwargs()}
    rows = [evaluate_row(args, data, baseline, "baseline", None, device)]
    rows += [evaluate_row(args, data, baseline, name, kwargs, device) for name, kwargs in candidates.items()]
    report = {"baseline_gmacs": scan.baseline["macs"] / 1e9, "target_gmacs": target.value, "uniform_ratio": ratio,
              "allocation": alloc.unit_ratios,
              "models": rows, "wall_s": round(time.perf_counter() - started, 1), "settings": _plain(vars(args))}
    atomic_write_json(report, args.work / "bench.json")
    from yolo_prune.report import build_report

    build_report(rows, args.work / "report", title="Sensitivity-allocated vs uniform pruning at equal GMACs")
    print("\n" + format_table([[r["name"], r["params_m"], r["gmacs"], r.get("map50_95_pruned"), r["map50_95"],
                                r["map50"]] for r in rows],
                              ["model", "params (M)", "GMACs", "mAP50-95 pruned", "mAP50-95 fine-tuned", "mAP50"]))
    print(f"\n{args.ft_epochs} fine-tune epochs each; written {args.work / 'bench.json'} "
          f"({report['wall_s']:.0f} s)")
    return report


def synthetic_data(args: argparse.Namespace) -> Path:
    """The data yaml: ``--data`` or the synthetic shapes set in ``--work``."""
    from yolo_prune.data.synthetic import make_synthetic_dataset

    data_yaml = args.work / "data" / "data.yaml"
    if data_yaml.exists():
        return data_yaml
    return make_synthetic_dataset(data_yaml.parent, n_train=args.synthetic_train, n_val=args.synthetic_val,
                                  img_size=args.img, seed=args.seed)


def train(args: argparse.Namespace, data: Path, run: Path, *, epochs: int, cfg: str | None = None,
          weights: Any = None) -> Path:
    """Trains (or fine-tunes) into ``run`` unless its best.pt is already there; returns best.pt."""
    from yolo_prune.api import finetune

    best = run / "weights" / "best.pt"
    if best.exists() and (run / "done").exists():
        return best
    finetune(weights, cfg=cfg if weights is None else None, data=data, out_dir=run, exist_ok=True, epochs=epochs,
             img_size=args.img, batch_size=args.batch, device=args.device, workers=args.workers, seed=args.seed)
    (run / "done").write_text("")
    return best


def sensitivity(args: argparse.Namespace, loaded: Any, data: Path, device: str,
                prune_settings: dict[str, Any]) -> SensitivityResult:
    """The sensitivity scan of ``loaded`` (read back from ``--work`` when it is there)."""
    path = args.work / "scan" / "sensitivity.json"
    if path.exists():
        return SensitivityResult.load(path)
    score_fn = make_map_score_fn(loaded, api.adapter_of(loaded), data, img_size=args.img, max_images=args.scan_images,
                                 batch_size=args.batch, device=device, workers=args.workers)
    scan = scan_sensitivity(loaded.model, api.adapter_of(loaded), score_fn, ratios=args.ratios, units=args.units,
                            img_size=args.img, prune_settings=prune_settings)
    scan.settings["metric"] = "map50_95"
    scan.save(path.parent)
    return scan


def evaluate_row(args: argparse.Namespace, data: Path, baseline: Path, name: str, prune_kwargs: dict | None,
                 device: str) -> dict[str, Any]:
    """Prunes (unless baseline), fine-tunes with the shared budget and evaluates on the whole val split."""
    from yolo_prune.pruning import conv_out_channels

    loaded = api.load(baseline)
    row: dict[str, Any] = {"name": name, "source": str(baseline)}
    if prune_kwargs is not None:
        api.prune(loaded, img_size=args.img, **prune_kwargs)
        row["map50_95_pruned"] = val_metrics(args, loaded, data, device)["map50_95"]
        pruned_path = args.work / name / "pruned.pt"
        api.save(loaded, pruned_path)
        best = train(args, data, args.work / name / "finetune", epochs=args.ft_epochs, weights=pruned_path)
        loaded = api.load(best)
        row["source"] = str(best)
    row.update(_stats(loaded, args.img))
    row.update(val_metrics(args, loaded, data, device))
    row["channels"] = conv_out_channels(loaded.model)
    return row


def val_metrics(args: argparse.Namespace, loaded: Any, data: Path, device: str) -> dict[str, float]:
    """mAP50-95 and mAP50 on the whole val split (one evaluation)."""
    from yolo_prune.data import CocoDetectionDataset, load_data_config
    from yolo_prune.evaluation import evaluate

    cfg = load_data_config(data)
    stride = max(32, int(max(loaded.stride)) if loaded.stride else 32)
    val = CocoDetectionDataset(cfg.val_images, cfg.val_ann, img_size=args.img, rect=True, batch_size=args.batch,
                               stride=stride)
    metrics = evaluate(loaded.model, val, decode=api.adapter_of(loaded).decode, batch_size=args.batch, device=device,
                       workers=args.workers)
    return {"map50_95": float(metrics["map50_95"]), "map50": float(metrics["map50"])}


def _stats(loaded: Any, img_size: int) -> dict[str, float]:
    import torch
    import torch_pruning as tp

    model = loaded.model.eval()
    example = torch.zeros(1, 3, img_size, img_size, device=next(model.parameters()).device)
    macs, params = tp.utils.count_ops_and_params(model, example)
    return {"gmacs": macs / 1e9, "params_m": params / 1e6}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}


if __name__ == "__main__":
    main()
