#!/usr/bin/env python3
"""Evaluation benchmark: end-to-end throughput, and the COCO metric time of both backends.

The metric time compares faster-coco-eval and pycocotools on the same detections.

    python scripts/bench_eval.py                      # synthetic val set, random yolov7-tiny, 640
    python scripts/bench_eval.py --weights best.pt --data data/synthetic/data.yaml --device 0

Prints a table and writes a JSON (settings, throughput, per-stage ms, metric times, and the
largest difference between the two backends' numbers, which should be 0).
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from yolo_prune import api  # noqa: E402
from yolo_prune.data import CocoDetectionDataset, load_data_config  # noqa: E402
from yolo_prune.data.synthetic import CLASSES, make_synthetic_dataset  # noqa: E402
from yolo_prune.devices import select_device  # noqa: E402
from yolo_prune.evaluation import coco_metrics, evaluate  # noqa: E402
from yolo_prune.evaluation.coco_eval import STAT_NAMES  # noqa: E402
from yolo_prune.io import atomic_write_json  # noqa: E402
from yolo_prune.reporting import format_table  # noqa: E402


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The benchmark's flags."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, help="data.yaml (default: write a synthetic set under --work)")
    p.add_argument("--work", type=Path, help="folder for the synthetic set (default: a temporary one)")
    p.add_argument("--n-val", type=int, default=128, help="synthetic validation images")
    p.add_argument("--weights", type=Path, help="checkpoint (default: random model from --cfg)")
    p.add_argument("--cfg", default="yolov7-tiny", help="model cfg when --weights is absent")
    p.add_argument("--img", type=int, default=640, help="inference size (also the synthetic image size)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--device", default="", help="'' (auto), cpu, 0")
    p.add_argument("--half", action="store_true", help="fp16 inference (CUDA)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of each metric backend")
    p.add_argument("--out", type=Path, default=Path("runs/bench/bench_eval.json"))
    return p.parse_args(argv)


def _dataset(args: argparse.Namespace, stride: int, tmp: str) -> CocoDetectionDataset:
    data_yaml = args.data or make_synthetic_dataset(args.work or Path(tmp) / "synthetic", n_train=0,
                                                    n_val=args.n_val, img_size=args.img, seed=0)
    cfg = load_data_config(data_yaml)
    return CocoDetectionDataset(cfg.val_images, cfg.val_ann, img_size=args.img, rect=True, batch_size=args.batch,
                                stride=stride)


def _time_backend(gt: dict, results: list[dict], backend: str, repeats: int, image_ids: list[int]) -> dict[str, Any]:
    seconds, metrics = [], {}
    for _ in range(repeats):
        start = time.perf_counter()
        metrics = coco_metrics(gt, results, backend=backend, image_ids=image_ids)
        seconds.append(time.perf_counter() - start)
    return {"median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds),
            "stats": [metrics[k] for k in STAT_NAMES]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluates once end to end, then times both metric backends on the same detections."""
    device = select_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        nc = load_data_config(args.data).nc if args.data else len(CLASSES)
        loaded = api.load(args.weights, cfg=None if args.weights else args.cfg, nc=None if args.weights else nc)
        adapter = api.adapter_of(loaded)
        dataset = _dataset(args, max(max(loaded.stride or [32]), 32), tmp)
        model = adapter.fuse(copy.deepcopy(loaded.model).eval())
        evaluate(model, dataset, decode=adapter.decode, batch_size=args.batch, device=device, half=args.half,
                 workers=args.workers, max_images=2 * args.batch)  # warm-up (allocator, cuDNN, page cache)
        start = time.perf_counter()
        metrics = evaluate(model, dataset, decode=adapter.decode, batch_size=args.batch, device=device,
                           half=args.half, workers=args.workers, results_path=Path(tmp) / "dets.json")
        total_s = time.perf_counter() - start
        results = json.loads((Path(tmp) / "dets.json").read_text())
    gt, ids = dataset.coco.dataset, dataset.image_ids
    timing = {b: _time_backend(gt, results, b, args.repeats, ids) for b in ("faster_coco_eval", "pycocotools")}
    diff = max(abs(a - b) for a, b in zip(timing["faster_coco_eval"]["stats"], timing["pycocotools"]["stats"], strict=True))
    return {"settings": {**metrics["settings"], "n_images": metrics["n_images"], "model": args.weights or args.cfg,
                         "data": str(args.data or "synthetic"), "workers": args.workers},
            "eval_images_per_s_inference_loop": metrics["images_per_s"],
            "eval_images_per_s_with_metric": metrics["n_images"] / total_s, "speed_ms": metrics["speed_ms"],
            "n_detections": metrics["n_detections"], "map50_95": metrics["map50_95"],
            "metric_time": {b: {k: v for k, v in t.items() if k != "stats"} for b, t in timing.items()},
            "metric_speedup_pycocotools_over_faster": timing["pycocotools"]["median_s"]
            / timing["faster_coco_eval"]["median_s"], "max_stat_difference": diff}


def print_report(report: dict[str, Any]) -> None:
    """Prints the throughput and metric-time tables."""
    s = report["settings"]
    print(f"{s['model']} on {s['data']} ({s['n_images']} images, img {s['img_size']}, batch {s['batch_size']}, "
          f"{s['device']}, half={s['half']}): {report['n_detections']} detections")
    print(f"evaluation throughput: {report['eval_images_per_s_inference_loop']:.1f} images/s (loading + inference "
          f"+ NMS + scaling), {report['eval_images_per_s_with_metric']:.1f} images/s including the COCO metric")
    print("per image (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in report["speed_ms"].items()))
    t = report["metric_time"]
    rows = [[b, t[b]["median_s"], t[b]["min_s"], t[b]["max_s"]] for b in ("faster_coco_eval", "pycocotools")]
    print(format_table(rows, ["metric backend", "median_s", "min_s", "max_s"]))
    print(f"pycocotools / faster-coco-eval time: {report['metric_speedup_pycocotools_over_faster']:.2f}x; "
          f"largest difference in the 12 COCO numbers: {report['max_stat_difference']:.2e}")


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark, prints and writes its figures; returns the exit status."""
    args = parse_args(argv)
    report = run(args)
    print_report(report)
    atomic_write_json(report, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
