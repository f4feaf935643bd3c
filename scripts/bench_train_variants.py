#!/usr/bin/env python3
"""Training-step throughput of loop variants against today's loop, timed interleaved in one process.

Every variant gets its own copy of the model, optimizer and EMA (a ``Trainer``) and steps on the
same cached batches; each round times one step of every variant in turn, so machine noise hits
them alike. A variant's speed-up is today's step time over its own, per round; the median and the
p10-p90 spread over rounds are printed. Data loading is timed apart (the augmented loader with 0
and with ``--workers`` processes), as its share of the whole loop.

Variants: ``base`` (today's loop: NCHW, OTA loss), ``channels_last`` (model and inputs in NHWC),
``plain_loss`` (the YOLOv7 shape-ratio assignment instead of OTA: ``loss_ota: 0``), ``compile``
(``torch.compile`` of the model; its compile time is reported and not timed as a step).

    python scripts/bench_train_variants.py                       # yolov7-tiny, 160 px, batch 16, CPU
    python scripts/bench_train_variants.py --variants base channels_last compile --rounds 20
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

VARIANTS = ("base", "channels_last", "plain_loss", "compile")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's flags."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, help="checkpoint (default: the shipped demo baseline)")
    p.add_argument("--img", type=int, default=160)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS[:3]), choices=VARIANTS)
    p.add_argument("--rounds", type=int, default=12, help="timed rounds (one step of every variant each)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    p.add_argument("--batches", type=int, default=4, help="distinct cached batches stepped through")
    p.add_argument("--workers", type=int, default=2, help="loader processes of the data-loading measurement")
    p.add_argument("--out", type=Path, help="also write the figures to this JSON")
    return p.parse_args(argv)


def make_trainer(loaded: Any, hyp: dict[str, Any], args: argparse.Namespace, out_dir: Path, variant: str) -> Any:
    """A ``Trainer`` of its own (model copy, optimizer, EMA) set up as ``variant``."""
    from yolo_prune.adapters import get_adapter
    from yolo_prune.engine.settings import TrainSettings
    from yolo_prune.engine.trainer import Trainer

    model = copy.deepcopy(loaded.model).float()
    if variant == "channels_last":
        model = model.to(memory_format=torch.channels_last)
    hyp = {**hyp, "loss_ota": 0} if variant == "plain_loss" else dict(hyp)
    settings = TrainSettings(epochs=1, img_size=args.img, batch_size=args.batch, nominal_batch=args.batch,
                             device="cpu", workers=0, val=False)
    trainer = Trainer(model, get_adapter(loaded.family), None, None, hyp=hyp, settings=settings,
                      out_dir=out_dir / variant, names=loaded.names, device=torch.device("cpu"))
    trainer.warmup_iters = 0  # the steady state: lr0 and an optimizer step every batch (warm-up is set per run)
    if variant == "compile":
        trainer.model.compile()  # in place: the state dict (EMA, checkpoints) keeps its keys
    trainer.model.train()
    return trainer


def cached_batches(loader: Any, n: int) -> list[tuple]:
    """The first ``n`` augmented batches, kept in memory."""
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == n:
            break
    return out


def as_variant(batch: tuple, variant: str) -> tuple:
    """The batch as ``variant`` feeds it (NHWC images for ``channels_last``)."""
    if variant != "channels_last":
        return batch
    return (batch[0].contiguous(memory_format=torch.channels_last), *batch[1:])


def time_steps(trainers: dict[str, Any], batches: list[tuple], args: argparse.Namespace) -> dict[str, list[float]]:
    """Seconds per step of every variant, round by round (the warm-up rounds dropped)."""
    times: dict[str, list[float]] = {v: [] for v in trainers}
    nb = len(batches)
    for r in range(args.warmup + args.rounds):
        batch = batches[r % nb]
        for variant, trainer in trainers.items():
            fed = as_variant(batch, variant)
            start = time.perf_counter()
            trainer.run_step(fed, 0, r, nb)
            if r >= args.warmup:
                times[variant].append(time.perf_counter() - start)
    return times


def loader_seconds(dataset: Any, batch: int, workers: int, n: int) -> float:
    """Median seconds to get one augmented batch from a fresh loader with ``workers`` processes."""
    from yolo_prune.data import build_dataloader

    loader = build_dataloader(dataset, batch, shuffle=True, workers=workers, seed=0)
    gaps, tick = [], time.perf_counter()
    for i, _ in enumerate(loader):
        now = time.perf_counter()
        if i > 0:  # the first batch includes starting the workers
            gaps.append(now - tick)
        tick = now
        if i == n:
            break
    return statistics.median(gaps)


def summarise(times: dict[str, list[float]], batch: int) -> list[dict[str, Any]]:
    """Per variant: median ms/step, images/s and the speed-up over ``base`` (median, p10, p90)."""
    rows = []
    for variant, seconds in times.items():
        ratios = sorted(b / s for b, s in zip(times["base"], seconds, strict=True))
        q = statistics.quantiles(ratios, n=10, method="inclusive") if len(ratios) > 1 else ratios * 9
        rows.append({"variant": variant, "ms_per_step": round(statistics.median(seconds) * 1000, 1),
                     "images_per_s": round(batch / statistics.median(seconds), 1),
                     "speedup_median": round(statistics.median(ratios), 3), "speedup_p10": round(q[0], 3),
                     "speedup_p90": round(q[-1], 3)})
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Times every variant and the data loader; prints the table and returns the figures."""
    from yolo_prune import api
    from yolo_prune.data import CocoDetectionDataset, build_dataloader, load_data_config
    from yolo_prune.data.synthetic import make_synthetic_dataset
    from yolo_prune.engine.finetune import default_hyp_path
    from yolo_prune.engine.hyp import load_hyp
    from yolo_prune.pipeline import SHIPPED_BASELINE
    from yolo_prune.reporting import format_table

    args = parse_args(argv)
    if "base" not in args.variants:
        args.variants.insert(0, "base")
    loaded = api.load(args.weights or SHIPPED_BASELINE)
    hyp = load_hyp(default_hyp_path())
    with tempfile.TemporaryDirectory(prefix="bench_train_variants_") as tmp:
        data = load_data_config(make_synthetic_dataset(Path(tmp) / "data", n_train=args.batch * 8, n_val=0,
                                                       img_size=args.img, seed=0))
        dataset = CocoDetectionDataset(data.train_images, data.train_ann, img_size=args.img, augment=True, hyp=hyp,
                                       batch_size=args.batch, stride=32)
        batches = cached_batches(build_dataloader(dataset, args.batch, shuffle=True, workers=0, seed=0), args.batches)
        trainers, compile_s = {}, None
        for variant in args.variants:
            trainers[variant] = make_trainer(loaded, hyp, args, Path(tmp) / "runs", variant)
            if variant == "compile":  # the first call compiles: time it apart
                start = time.perf_counter()
                trainers[variant].run_step(batches[0], 0, 0, len(batches))
                compile_s = round(time.perf_counter() - start, 1)
        rows = summarise(time_steps(trainers, batches, args), args.batch)
        load_s = {w: loader_seconds(dataset, args.batch, w, 6) for w in sorted({0, args.workers})}
    step_s = rows[0]["ms_per_step"] / 1000
    print(f"{args.weights or SHIPPED_BASELINE.name}, {args.img} px, batch {args.batch}, CPU threads "
          f"{torch.get_num_threads()}, {args.rounds} interleaved rounds after {args.warmup} warm-up")
    print(format_table([[r[k] for k in ("variant", "ms_per_step", "images_per_s", "speedup_median", "speedup_p10",
                                        "speedup_p90")] for r in rows],
                       ["variant", "ms/step", "images/s", "speed-up", "p10", "p90"]))
    for workers, seconds in load_s.items():
        print(f"data loading, {workers} workers: {seconds * 1000:.0f} ms/batch "
              f"({seconds / (seconds + step_s):.0%} of a step + load when not overlapped)")
    if compile_s is not None:
        print(f"torch.compile: first step (compilation) {compile_s} s")
    result = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "variants": rows,
              "loader_ms_per_batch": {str(w): round(s * 1000, 1) for w, s in load_s.items()},
              "compile_first_step_s": compile_s, "threads": torch.get_num_threads()}
    if args.out:
        from yolo_prune.io import atomic_write_json

        atomic_write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
