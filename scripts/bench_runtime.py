#!/usr/bin/env python3
"""Benchmark: what pruning buys on the runtimes models are deployed to (interleaved A/B).

For each model cfg (yolov7, yolov7-tiny by default): builds it, prunes a copy (ratio 0.5,
round_to 8, at 640 px), exports both once, then times original and pruned interleaved in this
process on ONNX Runtime, OpenVINO and eager PyTorch (channels_last), twice in a row. Prints, per
runtime, the speed-up with its 10-90 % spread, the MACs reduction, the share of it realised
(targets: yolov7 >= 0.9, yolov7-tiny >= 0.75 on ONNX Runtime) and how far the two runs differ
(target: within 10 %).

``--study`` adds the ONNX Runtime settings behind the gap found in issue 13: its default
spin-waiting intra-op threads, and lower graph optimisation levels (no NCHWc layout).

    python scripts/bench_runtime.py                    # ~6 min on 2 busy cores
    python scripts/bench_runtime.py --study --rounds 12
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from yolo_prune import api  # noqa: E402
from yolo_prune.deploy.ab import compare_latency  # noqa: E402
from yolo_prune.deploy.runtimes import missing_runtime  # noqa: E402
from yolo_prune.io.atomic import atomic_write_json  # noqa: E402
from yolo_prune.reporting import format_table  # noqa: E402

TARGETS = {"yolov7": 0.9, "yolov7-tiny": 0.75}
STUDY = {"onnxruntime, spinning (ORT default)": {"spinning": True},
         "onnxruntime, extended (no NCHWc)": {"optimization": "extended"},
         "onnxruntime, basic": {"optimization": "basic"}}


def main() -> None:
    """Prints the runtime figures (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfgs", nargs="+", default=["yolov7", "yolov7-tiny"])
    parser.add_argument("--runtimes", nargs="+", default=["onnxruntime", "openvino", "torch"])
    parser.add_argument("--img-size", type=int, default=640)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--round-to", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2, help="A/B runs in a row per runtime")
    parser.add_argument("--study", action="store_true", help="also time the ONNX Runtime settings of STUDY")
    parser.add_argument("--out", type=Path, help="write all results to this JSON")
    args = parser.parse_args()

    rows, results = [], []
    for cfg in args.cfgs:
        original, pruned = api.load(cfg=cfg), api.load(cfg=cfg)
        api.prune(pruned, pruning_ratio=args.ratio, img_size=args.img_size, round_to=args.round_to)
        cases = [(r, r, None) for r in args.runtimes if missing_runtime(r) is None]
        if args.study:
            cases += [(name, "onnxruntime", settings) for name, settings in STUDY.items()]
        with tempfile.TemporaryDirectory(prefix="bench-runtime-") as workdir:  # one export per model
            for name, runtime, settings in cases:
                runs = [compare_latency(original, pruned, runtime=runtime, img_size=args.img_size, batch=args.batch,
                                        threads=args.threads, warmup=args.warmup, rounds=args.rounds,
                                        workdir=workdir, runtime_settings=settings) for _ in range(args.repeats)]
                results.append({"cfg": cfg, "case": name, "runs": runs})
                rows.append(_row(cfg, name, runs))
                print(format_table([rows[-1]], HEADERS), flush=True)
    print("\n" + format_table(rows, HEADERS))
    if args.out:
        atomic_write_json({"args": vars(args), "results": results}, args.out)


HEADERS = ["model", "runtime", "orig_ms", "pruned_ms", "speedups [p10-p90] per run", "macs_red", "share",
           "target", "run_diff_%", "verdict"]


def _row(cfg: str, name: str, runs: list[dict]) -> list:
    speedups = [r["speedup_median"] for r in runs]
    share = sum(r["speedup_per_macs_reduction"] for r in runs) / len(runs)
    spread = "; ".join(f"{r['speedup_median']:.2f} [{r['speedup_p10']:.2f}-{r['speedup_p90']:.2f}]" for r in runs)
    diff = 100 * (max(speedups) - min(speedups)) / (sum(speedups) / len(speedups))
    verdict = "ok" if all(r["significant"] for r in runs) else "not significant"
    last = runs[-1]
    return [cfg, name, f"{last['original']['latency_ms_median']:.1f}", f"{last['pruned']['latency_ms_median']:.1f}",
            spread, f"{runs[0]['macs_reduction']:.2f}", f"{share:.2f}", TARGETS.get(cfg, "-") if name == "onnxruntime"
            else "-", f"{diff:.1f}", verdict]


if __name__ == "__main__":
    main()
