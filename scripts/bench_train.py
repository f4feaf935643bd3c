#!/usr/bin/env python3
"""Training throughput (images/s) of the fine-tuning loop, by default yolov7-tiny at 320 px on CPU.

Runs ``Trainer.run_step`` (forward, YOLOv7 loss, backward, SGD step when the accumulation is
due, EMA update) over real batches of the synthetic shapes set, with augmentation (mosaic,
HSV, flips, affine) in the data loader. Prints images/s for the step alone and for the
whole loop including data loading, after a few warm-up iterations.

    python scripts/bench_train.py                      # yolov7-tiny, 320 px, batch 8, CPU
    python scripts/bench_train.py --img 640 --batch 16 --device 0
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

SHARED_TINY = Path(__file__).resolve().parents[2] / "shared" / "checkpoints" / "yolov7" / "yolov7-tiny.pt"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, help=f"checkpoint (default {SHARED_TINY.name} if present)")
    parser.add_argument("--cfg", default="yolov7-tiny", help="cfg to build when there are no weights")
    parser.add_argument("--hyp", type=Path, help="hyp yaml (default: the project's fine-tuning hyp)")
    parser.add_argument("--img", type=int, default=320)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    parser.add_argument("--iters", type=int, default=6, help="timed iterations")
    parser.add_argument("--nominal-batch", type=int, default=64,
                        help="accumulate to this many images per optimizer step (YOLOv7: 64)")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    return parser.parse_args(argv)


def build_trainer(args: argparse.Namespace, out_dir: Path) -> tuple:
    """A ``Trainer`` on the model of ``--weights`` (or ``--cfg``) with the hyp of ``--hyp``."""
    from yolo_prune import api
    from yolo_prune.devices import select_device
    from yolo_prune.engine.finetune import default_hyp_path
    from yolo_prune.engine.hyp import load_hyp
    from yolo_prune.engine.settings import TrainSettings
    from yolo_prune.engine.trainer import Trainer

    weights = args.weights or (SHARED_TINY if SHARED_TINY.is_file() else None)
    loaded = api.load(weights, cfg=None if weights else args.cfg)
    device = select_device(args.device)
    settings = TrainSettings(epochs=1, img_size=args.img, batch_size=args.batch, nominal_batch=args.nominal_batch,
                             device=str(device), workers=args.workers, val=False)
    trainer = Trainer(loaded.model, api.adapter_of(loaded), None, None, hyp=load_hyp(args.hyp or default_hyp_path()),
                      settings=settings, out_dir=out_dir, names=loaded.names, device=device)
    return trainer, loaded, weights


def train_loader(args: argparse.Namespace, hyp: dict, stride: int,
                 data_dir: Path) -> torch.utils.data.DataLoader:
    """The augmented training loader over a synthetic shapes set written to ``data_dir``."""
    from yolo_prune.data import CocoDetectionDataset, build_dataloader, load_data_config
    from yolo_prune.data.synthetic import make_synthetic_dataset

    n_images = args.batch * (args.warmup + args.iters)
    cfg = load_data_config(make_synthetic_dataset(data_dir, n_train=n_images, n_val=0, img_size=args.img, seed=0))
    dataset = CocoDetectionDataset(cfg.train_images, cfg.train_ann, img_size=args.img, augment=True, hyp=hyp,
                                   batch_size=args.batch, stride=stride)
    return build_dataloader(dataset, args.batch, shuffle=True, workers=args.workers, seed=0)


def main(argv: list[str] | None = None) -> int:
    """Times the training step and the whole loop; prints images/s; returns the exit status."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        trainer, loaded, weights = build_trainer(args, Path(tmp) / "run")
        loader = train_loader(args, trainer.hyp, max(max(loaded.stride), 32), Path(tmp) / "data")
        step_s, loop_s = [], []
        trainer.model.train()
        nb = len(loader)
        tick = time.perf_counter()
        for i, batch in enumerate(loader):
            start = time.perf_counter()
            trainer.run_step(batch, 0, i, nb)  # no warm-up here: lr0 and the full accumulation
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            end = time.perf_counter()
            if i >= args.warmup:
                step_s.append(end - start)
                loop_s.append(end - tick)
            tick = end
    params_m = sum(p.numel() for p in loaded.model.parameters()) / 1e6
    print(f"model: {weights or args.cfg} ({params_m:.2f} M params), {args.img} px, batch {args.batch}, "
          f"device {trainer.device}, threads {torch.get_num_threads()}, accumulate {trainer.accumulate}, "
          f"{len(step_s)} timed iterations after {args.warmup} warm-up")
    step, loop = statistics.median(step_s), statistics.median(loop_s)
    print(f"train step (fwd + loss + bwd + opt/EMA): {step * 1000:.0f} ms/iter  ->  {args.batch / step:.1f} images/s")
    print(f"whole loop incl. data + augmentation:    {loop * 1000:.0f} ms/iter  ->  {args.batch / loop:.1f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
