#!/usr/bin/env python3
r"""Validation-mAP learning curves of finished (or running) training runs, as one JSON and one plot.

    python scripts/learning_curves.py runs/a runs/b --labels "SGD b16" "AdamW b8" \\
        --out docs/results/baseline_curves

Each run is a ``yolo-prune finetune`` folder: its ``args.yaml`` gives the data, hyp and settings,
its ``results.csv`` the validation rows. Writes ``OUT.json`` (per run: label, data header, hyp,
epochs, batch, curve of epoch / mAP50-95 / mAP50, seconds of training) and ``OUT.png`` (mAP50-95
against epoch, one line per run), and prints the last validation of each run.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from yolo_prune.io import atomic_write_json  # noqa: E402
from yolo_prune.recovery import read_curve  # noqa: E402
from yolo_prune.report.plots import pyplot, save_figure  # noqa: E402
from yolo_prune.reporting import format_table  # noqa: E402


def run_curve(run: Path, label: str) -> dict[str, Any]:
    """One run's settings and validation curve (epochs counted from 1)."""
    job = yaml.safe_load((run / "args.yaml").read_text())
    rows = list(csv.DictReader((run / "results.csv").open()))
    data = Path(job["data"])
    header = data.read_text().splitlines()[0] if data.exists() else str(data)
    s = job["settings"]
    return {"label": label, "run": str(run), "data": header, "hyp": Path(job["hyp"]).name if job.get("hyp") else None,
            "epochs": s["epochs"], "batch_size": s["batch_size"], "close_mosaic": s.get("close_mosaic", 0),
            "epochs_done": len(rows), "train_s": round(sum(float(r["time_s"]) for r in rows), 1),
            "curve": read_curve(run / "results.csv")}


def plot(runs: list[dict[str, Any]], out: Path) -> None:
    """mAP50-95 against epoch, one line per run."""
    fig, ax = pyplot().subplots(figsize=(7, 4.5))
    for r in runs:
        ax.plot([p["epoch"] for p in r["curve"]], [p["map50_95"] for p in r["curve"]], marker="o", ms=3,
                label=r["label"])
    ax.axhline(0.5, color="grey", ls="--", lw=1, label="target 0.5")
    ax.set(xlabel="epoch", ylabel="val mAP50-95", title="yolov7-tiny from its cfg, 160 px, 2 CPU cores")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Reads the runs, writes the JSON and the plot, prints the last validation of each."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path, nargs="+", help="finetune run folders")
    p.add_argument("--labels", nargs="+", help="one label per run (default: the folder names)")
    p.add_argument("--out", type=Path, required=True, help="output path without suffix (.json and .png are added)")
    args = p.parse_args(argv)
    labels = args.labels or [r.name for r in args.runs]
    if len(labels) != len(args.runs):
        p.error(f"--labels gives {len(labels)} labels for {len(args.runs)} runs: give one per run")
    runs = [run_curve(run, label) for run, label in zip(args.runs, labels, strict=True)]
    command = "python scripts/learning_curves.py " + " ".join(sys.argv[1:] if argv is None else argv)
    atomic_write_json({"command": command, "runs": runs}, args.out.with_suffix(".json"))
    plot(runs, args.out.with_suffix(".png"))
    rows = [[r["label"], r["hyp"], r["batch_size"], f"{r['epochs_done']}/{r['epochs']}",
             f"{r['curve'][-1]['map50_95']:.3f}" if r["curve"] else "-",
             f"{r['curve'][-1]['map50']:.3f}" if r["curve"] else "-", f"{r['train_s'] / 60:.1f}"] for r in runs]
    print(format_table(rows, ["run", "hyp", "batch", "epochs", "mAP50-95", "mAP50", "train min"]))
    return runs


if __name__ == "__main__":
    main()
