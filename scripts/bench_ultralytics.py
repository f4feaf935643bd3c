#!/usr/bin/env python3
"""Benchmark: prune Ultralytics detectors (built from yaml) and print what it buys.

Part 1 (always): GMACs, params and fused fp32 batch-1 CPU latency at --img, before and after
pruning at --ratio, for each --cfgs (yolov8n.yaml, yolo11n.yaml by default).

Part 2 (--epochs > 0): on the synthetic shapes set, trains each model from scratch for
--epochs, prunes a copy and fine-tunes it for --finetune-epochs, trains the unpruned copy
the same extra epochs, and evaluates both with this project's evaluator (COCO mAP), so
the numbers compare with the other families.

    python scripts/bench_ultralytics.py                              # part 1 at 640 px
    python scripts/bench_ultralytics.py --no-speed --epochs 40 --finetune-epochs 15 --train-img 128
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("YOLO_OFFLINE", "1")

import torch  # noqa: E402

from yolo_prune import api  # noqa: E402
from yolo_prune.benchmark import measure_latency, model_stats  # noqa: E402
from yolo_prune.reporting import format_table  # noqa: E402


def main() -> None:
    """Prints the speed table (part 1) and, with ``--epochs``, the accuracy table (part 2)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfgs", nargs="+", default=["yolov8n.yaml", "yolo11n.yaml"])
    parser.add_argument("--img", type=int, default=640)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--importance", default="l2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--speed", action=argparse.BooleanOptionalAction, default=True,
                        help="part 1 (GMACs and CPU latency); --no-speed runs part 2 only")
    parser.add_argument("--epochs", type=int, default=0, help="part 2: from-scratch training epochs (0 skips)")
    parser.add_argument("--finetune-epochs", type=int, default=10)
    parser.add_argument("--train-img", type=int, default=160)
    parser.add_argument("--n-train", type=int, default=256, help="synthetic training images (validation: a quarter)")
    parser.add_argument("--out", type=Path, default=None, help="part 2 work folder (default: a temp folder)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.speed:
        rows = [row for cfg in args.cfgs for row in _speed_rows(cfg, args)]
        print(f"\n@ {args.img}px, {args.importance}, ratio {args.ratio}, fused fp32 batch 1, {args.threads} CPU "
              f"threads, median of {args.runs}")
        print(format_table(rows, ["model", "prune s", "params M", "GMACs", "CPU ms", "MACs x", "latency x"]))
    if args.epochs > 0:
        out = args.out or Path(tempfile.mkdtemp(prefix="bench_ultralytics_"))
        rows = [_accuracy_row(cfg, args, out) for cfg in args.cfgs]
        print(f"\nsynthetic set @ {args.train_img}px: {args.epochs} epochs from scratch, then "
              f"{args.finetune_epochs} more (pruned at {args.ratio} in between, or not)")
        print(format_table(rows, ["model", "mAP50-95 unpruned", "mAP50-95 pruned", "mAP50 unpruned",
                                  "mAP50 pruned"]))


def _speed_rows(cfg: str, args: argparse.Namespace) -> list[list]:
    base = api.load(cfg=cfg)
    adapter = api.adapter_of(base)
    before = _measure(base.model, adapter, args)
    pruned = copy.deepcopy(base)
    start = time.perf_counter()
    api.prune(pruned, img_size=args.img, importance=args.importance, pruning_ratio=args.ratio)
    prune_s = time.perf_counter() - start
    after = _measure(pruned.model, adapter, args)
    return [[cfg, None, *before, 1.0, 1.0],
            [f"{cfg} pruned {args.ratio}", prune_s, *after, before[1] / after[1], before[2] / after[2]]]


def _measure(model: torch.nn.Module, adapter, args: argparse.Namespace) -> list[float]:
    stats = model_stats(model, args.img)
    fused = adapter.fuse(model)
    latency = measure_latency(fused, args.img, batch=1, warmup=3, runs=args.runs, threads=args.threads,
                              decode=adapter.decode)
    return [stats["params_m"], stats["gmacs"], latency["latency_ms_median"]]


def _accuracy_row(cfg: str, args: argparse.Namespace, out: Path) -> list:
    from yolo_prune.adapters.ultralytics.trainer import finetune
    from yolo_prune.data import CocoDetectionDataset, load_data_config
    from yolo_prune.data.synthetic import make_synthetic_dataset
    from yolo_prune.evaluation import evaluate

    data_yaml = make_synthetic_dataset(out / "synthetic", n_train=args.n_train, n_val=max(args.n_train // 4, 1),
                                       img_size=args.train_img, seed=0)
    data = load_data_config(data_yaml)
    train = dict(img_size=args.train_img, batch_size=16, project=out / "runs")
    base = api.load(cfg=cfg, nc=data.nc)
    adapter = api.adapter_of(base)
    trained = finetune(base, data_yaml, epochs=args.epochs, name=f"{cfg}-scratch", **train)
    unpruned = finetune(trained, data_yaml, epochs=args.finetune_epochs, name=f"{cfg}-more", **train)
    api.prune(trained, img_size=args.train_img, importance=args.importance, pruning_ratio=args.ratio)
    pruned = finetune(trained, data_yaml, epochs=args.finetune_epochs, name=f"{cfg}-pruned", **train)
    val = CocoDetectionDataset(data.val_images, data.val_ann, img_size=args.train_img)
    scores = [evaluate(adapter.fuse(m.model), val, decode=adapter.decode, batch_size=8) for m in (unpruned, pruned)]
    return [cfg, scores[0]["map50_95"], scores[1]["map50_95"], scores[0]["map50"], scores[1]["map50"]]


if __name__ == "__main__":
    main()
