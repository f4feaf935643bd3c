#!/usr/bin/env python3
"""Ship a trained run's ``best.pt`` as the main job's baseline, with a card saying how it was made.

    python scripts/ship_baseline.py runs/demo-baseline            # -> yolo_prune/assets/yolov7-tiny-demo.{pt,json}

The run must be a ``yolo-prune finetune --cfg ...`` run on a synthetic set written by
``yolo-prune make-synthetic`` (its data.yaml header names the profile, seed, size and counts). The
card records the two commands that re-create the file, the seed, epochs, wall time, the
validation mAP of the shipped weights and their sha256; the main job uses the file only when
its own synthetic settings equal the card's.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from yolo_prune.io import atomic_path, atomic_write_json  # noqa: E402
from yolo_prune.pipeline import SHIPPED_BASELINE  # noqa: E402

_HEADER = re.compile(r"profile (\w+): seed (\d+), img_size (\d+), (\d+) train / (\d+) val")


def main(argv: list[str] | None = None) -> Path:
    """Copies a finished run's best.pt into the package assets with its card; returns the checkpoint."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="the finetune run folder (args.yaml, results.csv, weights/best.pt)")
    p.add_argument("--out", type=Path, default=SHIPPED_BASELINE)
    args = p.parse_args(argv)
    card = make_card(args.run)
    with atomic_path(args.out) as tmp:
        shutil.copyfile(args.run / "weights" / "best.pt", tmp)
    card["sha256"] = hashlib.sha256(args.out.read_bytes()).hexdigest()
    card["file_mib"] = round(args.out.stat().st_size / 2**20, 2)
    atomic_write_json(card, args.out.with_suffix(".json"))
    print(f"shipped {args.out} ({card['file_mib']} MiB), card {args.out.with_suffix('.json')}")
    return args.out


def make_card(run: Path) -> dict[str, Any]:
    """The card: data settings, the commands, seed, epochs, wall time and final validation mAP."""
    job = yaml.safe_load((run / "args.yaml").read_text())
    s = job["settings"]
    header = Path(job["data"]).read_text().splitlines()[0]
    match = _HEADER.search(header)
    if job.get("weights") or not job.get("cfg") or match is None:
        raise SystemExit(f"{run} is not a finetune --cfg run on a make-synthetic set (data header: {header!r})")
    profile, seed, img, n_train, n_val = match.groups()
    data = {"profile": profile, "seed": int(seed), "img_size": int(img), "n_train": int(n_train), "n_val": int(n_val)}
    rows = list(csv.DictReader((run / "results.csv").open()))
    last_val = [r for r in rows if r.get("metrics/mAP50-95")][-1]
    hyp = Path(job["hyp"]).name if job.get("hyp") else None
    commands = [f"yolo-prune make-synthetic --out data/demo --profile {profile} --seed {seed} --img {img} "
                f"--n-train {n_train} --n-val {n_val}",
                f"yolo-prune finetune --cfg {job['cfg']} --data data/demo/data.yaml --hyp configs/hyp/{hyp} "
                f"--epochs {s['epochs']} --img {s['img_size']} --batch {s['batch_size']} "
                f"--nominal-batch {s['nominal_batch']} --workers {s['workers']} --val-period {s['val_period']} "
                + (f"--close-mosaic {s['close_mosaic']} " if s.get("close_mosaic") else "")
                + ("--no-amp " if not s.get("amp", True) else "")
                + f"--seed {s['seed']} --out runs/demo-baseline",
                "python scripts/ship_baseline.py runs/demo-baseline"]
    return {"cfg": job["cfg"], "data": data, "hyp": hyp, "epochs": s["epochs"], "seed": s["seed"],
            "img_size": s["img_size"], "commands": commands,
            "wall_s": round(sum(float(r["time_s"]) for r in rows), 1),
            "val": {"epoch": int(last_val["epoch"]) + 1, "map50_95": float(last_val["metrics/mAP50-95"]),
                    "map50": float(last_val["metrics/mAP50"])},
            "machine": "2 CPU cores, no GPU, OMP_NUM_THREADS=1 (beside a second training of the same length)"}


if __name__ == "__main__":
    main()
