#!/usr/bin/env python3
"""Benchmark: prune full-size YOLOv7 (training cfg, random weights) and print what it buys.

Prints pruning wall time, GMACs before/after, fused fp32 batch-1 CPU latency before/after
(median of --runs after warm-up, --threads threads) and latency speed-up / MACs reduction:
how much of the theoretical saving turns into real speed.

    python scripts/bench_prune.py                      # yolov7, 640 px, ratio 0.5, L2
    python scripts/bench_prune.py --round-to 16 --cfg yolov7-tiny
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from yolo_prune import api  # noqa: E402
from yolo_prune.benchmark import measure_latency, model_stats  # noqa: E402
from yolo_prune.reporting import format_table  # noqa: E402


def main() -> None:
    """Prunes at each ``--round-to`` and prints the GMACs and latency table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", default="yolov7")
    parser.add_argument("--img", type=int, default=640)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--importance", default="l2")
    parser.add_argument("--round-to", type=_round_to, nargs="*", default=[None, 8, 16, 32],
                        help="channel alignments to compare ('none' = no rounding)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--nchw", action="store_true", help="time in NCHW instead of channels_last (NHWC)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    base = api.load(cfg=args.cfg)
    adapter = api.adapter_of(base)
    rows = [_measure("original", base.model, adapter, args, prune_s=None)]
    for round_to in args.round_to:
        loaded = copy.deepcopy(base)
        start = time.perf_counter()
        api.prune(loaded, img_size=args.img, importance=args.importance, pruning_ratio=args.ratio,
                  round_to=round_to)
        rows.append(_measure(f"ratio {args.ratio}, round_to {round_to}", loaded.model, adapter, args,
                             prune_s=time.perf_counter() - start))
    base_gmacs, base_ms = rows[0][2], rows[0][3]
    table = [[*r, base_gmacs / r[2], base_ms / r[3], (base_ms / r[3]) / (base_gmacs / r[2])] for r in rows]
    layout = "NCHW" if args.nchw else "channels_last"
    print(f"\n{args.cfg} @ {args.img}px, {args.importance}, fused fp32 batch 1 ({layout}), {args.threads} threads, "
          f"median of {args.runs}")
    print(format_table(table, ["model", "prune s", "GMACs", "CPU ms", "MACs x", "latency x", "latency x / MACs x"]))


def _round_to(value: str) -> int | None:
    return None if value.lower() == "none" else int(value)


def _measure(name, model, adapter, args, *, prune_s):
    gmacs = model_stats(model, args.img)["gmacs"]
    fused = adapter.fuse(copy.deepcopy(model).eval())
    latency = measure_latency(fused, args.img, batch=1, warmup=3, runs=args.runs, threads=args.threads, nms=False,
                              channels_last=not args.nchw)
    return [name, prune_s, gmacs, latency["latency_ms_median"]]


if __name__ == "__main__":
    main()
