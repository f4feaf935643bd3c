#!/usr/bin/env python3
"""Fine-tuning recipes for a pruned model, compared by validation-mAP curves on one budget.

    python scripts/bench_finetune_recipes.py                      # shipped demo baseline, ratio 0.5 (l2)
    python scripts/bench_finetune_recipes.py --candidates sgd-3e-3 adamw-1e-3 --epochs 2   # smoke

Each candidate is the project's fine-tuning hyp with a few keys changed. Every candidate fine-tunes
the same pruned model (and, with --control, the unpruned baseline) for --epochs with validation every
epoch, so the curves show mAP against epochs in the short-budget regime. Writes a JSON and a plot
(one line per candidate) and prints final mAP50-95, retention against the same-recipe control and
seconds per epoch. Re-running continues.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from yolo_prune.io import atomic_write_json, atomic_write_text  # noqa: E402
from yolo_prune.paths import HYP_DIR  # noqa: E402
from yolo_prune.recovery import Budget, run_arm  # noqa: E402
from yolo_prune.reporting import format_table  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
_ADAMW = {"optimizer": "AdamW", "lr0": 0.001, "lrf": 0.1, "warmup_epochs": 1.0, "warmup_bias_lr": 0.0}
# name -> changes to the base hyp (``--base-hyp``)
CANDIDATES: dict[str, dict[str, Any]] = {
    "sgd-3e-3": {"optimizer": "SGD", "lr0": 0.003},
    "sgd-1e-2": {"optimizer": "SGD", "lr0": 0.01},
    "adamw-1e-3": dict(_ADAMW),
    "adamw-2e-3": {**_ADAMW, "lr0": 0.002},
    "adamw-1e-3-mild": {**_ADAMW, "mosaic": 0.5, "scale": 0.3, "mixup": 0.0},
    "adamw-1e-3-nomosaic": {**_ADAMW, "mosaic": 0.0, "mixup": 0.0},
    # the default before the box gain and the milder augmentation (the P5 values)
    "adamw-1e-3-p5": {**_ADAMW, "box": 0.05, "mosaic": 1.0, "scale": 0.5, "mixup": 0.05},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's flags."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", type=Path, help="trained checkpoint (default: the shipped demo baseline)")
    p.add_argument("--data", type=Path, help="data yaml (default: the demo set of the shipped baseline)")
    p.add_argument("--work", type=Path, default=Path("runs/bench_recipes"))
    p.add_argument("--out", type=Path, default=RESULTS / "finetune_recipes.json")
    p.add_argument("--base-hyp", type=Path, default=HYP_DIR / "hyp.finetune.yaml")
    p.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--importance", default="l2")
    p.add_argument("--round-to", type=int, default=8)
    p.add_argument("--control", action="store_true", help="also fine-tune the unpruned baseline per candidate")
    p.add_argument("--img", type=int, default=160)
    p.add_argument("--workers", type=int, default=2)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Fine-tunes the pruned model with each recipe; prints and writes the comparison."""
    from bench_recovery import resolve_inputs  # the same baseline / data resolution

    args = parse_args(argv)
    started = time.perf_counter()
    baseline, data = resolve_inputs(args)
    base = yaml.safe_load(args.base_hyp.read_text())
    prune = {"pruning_ratio": args.ratio, "importance": args.importance, "round_to": args.round_to}
    results = []
    for name in args.candidates:
        hyp = atomic_write_text(yaml.safe_dump({**base, **CANDIDATES[name]}, sort_keys=False),
                                args.work / "hyp" / f"{name}.yaml")
        budget = Budget(epochs=args.epochs, img_size=args.img, hyp=str(hyp), val_period=1, workers=args.workers)
        row = run_arm(args.work, f"{name}-pruned", baseline, data, budget, prune_settings=prune)
        entry = {"candidate": name, "changes": CANDIDATES[name], "pruned": row,
                 "s_per_epoch": row["wall_s"] / args.epochs}
        if args.control:
            entry["control"] = run_arm(args.work, f"{name}-control", baseline, data,
                                       Budget(**{**budget.__dict__, "val_period": args.epochs}))
            entry["retention"] = row["map50_95"] / entry["control"]["map50_95"]
        results.append(entry)
        report = {"command": "python scripts/bench_finetune_recipes.py " + " ".join(sys.argv[1:]),
                  "baseline": str(baseline), "prune": prune, "epochs": args.epochs, "candidates": results,
                  "wall_s": round(time.perf_counter() - started, 1)}
        atomic_write_json(report, args.out)
    plot(report, args.out.with_suffix(".png"))
    print(format_table([[r["candidate"], r["pruned"]["map50_95_pruned"], r["pruned"]["map50_95"],
                         r.get("control", {}).get("map50_95"), r.get("retention"), r["s_per_epoch"]]
                        for r in results],
                       ["recipe", "mAP50-95 pruned", "after fine-tune", "control", "retention", "s/epoch"]))
    print(f"written {args.out} ({report['wall_s']:.0f} s)")
    return report


def plot(report: dict[str, Any], path: Path) -> Path:
    """Validation mAP50-95 against epoch (from 1), one line per recipe."""
    from matplotlib.ticker import MaxNLocator

    from yolo_prune.report.plots import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(7, 4.5))
    for r in report["candidates"]:
        curve = r["pruned"]["curve"]
        ax.plot([c["epoch"] for c in curve], [c["map50_95"] for c in curve], marker="o", ms=3, label=r["candidate"])
        if "control" in r:
            ax.axhline(r["control"]["map50_95"], ls=":", lw=1, color=ax.lines[-1].get_color())
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("fine-tune epoch")
    ax.set_ylabel("validation mAP50-95 (EMA model)")
    controls = "; dotted: controls" if any("control" in r for r in report["candidates"]) else ""
    ax.set_title(f"Recovery of the pruned model (ratio {report['prune']['pruning_ratio']}){controls}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


if __name__ == "__main__":
    main()
