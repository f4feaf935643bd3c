"""``yolo-prune finetune`` / ``scripts/finetune.py``: arguments -> one ``finetune`` call.

Runs alone or under ``torchrun --nproc_per_node N`` (DDP: nccl on GPU, gloo on CPU).
Every flag left out means the default of ``TrainSettings`` (defaults live there only).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from yolo_prune.cli import add_model_source_args
from yolo_prune.engine.optim import SCHEDULES
from yolo_prune.engine.settings import TrainSettings

_DEFAULTS = TrainSettings()
DEFAULT_PROJECT, DEFAULT_NAME = Path("runs/finetune"), "exp"


def add_finetune_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the fine-tuning flags to ``parser`` (shared by the script and the CLI)."""
    src = add_model_source_args(parser.add_argument_group("model and data"),
                                weights_help="checkpoint to fine-tune (e.g. a pruned model)",
                                cfg_help="model cfg to train from random weights when --weights is absent "
                                         "(makes a baseline), or the architecture of a bare state dict",
                                trusted="--weights / --teacher")
    src.add_argument("--data", type=Path, help="data yaml (train/val image folders and COCO json files, names)")
    src.add_argument("--hyp", type=Path, help="hyper-parameter yaml (default: the project's fine-tuning hyp)")
    src.add_argument("--teacher", type=Path, help="unpruned checkpoint: adds a knowledge-distillation term "
                                                  "(boxes and objectness only when its classes differ from the data's)")
    src.add_argument("--rename-classes", action="store_true",
                     help="the model has as many classes as the data under other names: train them under the "
                          "data's names (other class counts always get a new class head)")
    run = parser.add_argument_group("training")
    run.add_argument("--epochs", type=int, help=f"total epochs (default {_DEFAULTS.epochs})")
    run.add_argument("--img", "--img-size", dest="img_size", type=int,
                     help=f"train/val size in pixels (default {_DEFAULTS.img_size})")
    run.add_argument("--batch", "--batch-size", dest="batch_size", type=int,
                     help=f"total batch over all processes (default {_DEFAULTS.batch_size})")
    run.add_argument("--device", help="'' (GPU if any), cpu, 0, cuda:1; under torchrun each rank takes its own GPU")
    run.add_argument("--workers", type=int, help=f"data-loading processes per rank (default {_DEFAULTS.workers})")
    run.add_argument("--lr-schedule", choices=SCHEDULES, help=f"lr decay (default {_DEFAULTS.lr_schedule})")
    run.add_argument("--nominal-batch", type=int, help="accumulate gradients up to this many images (default 64)")
    run.add_argument("--close-mosaic", type=int, help="turn mosaic off for this many final epochs (default 0)")
    run.add_argument("--distill-weight", type=float, help="weight of the distillation term (default 1.0)")
    run.add_argument("--max-grad-norm", type=float, help="clip the gradient norm (default: no clipping)")
    run.add_argument("--seed", type=int, help=f"base random seed (default {_DEFAULTS.seed})")
    run.add_argument("--sync-bn", action="store_true", default=None, help="SyncBatchNorm under DDP (CUDA only)")
    run.add_argument("--no-ema", dest="ema", action="store_false", default=None, help="no weight EMA")
    run.add_argument("--no-amp", dest="amp", action="store_false", default=None, help="no mixed precision on CUDA")
    run.add_argument("--sparse", help="sparse training before pruning: bn_l1 (network slimming), "
                                      "bn_group_lasso or group_norm (torch-pruning regularisers)")
    run.add_argument("--sparse-reg", type=float, default=1e-4, help="sparse-training penalty (default %(default)s)")
    val = parser.add_argument_group("validation")
    val.add_argument("--no-val", dest="val", action="store_false", default=None, help="skip validation")
    val.add_argument("--val-period", type=int, help="validate every N epochs (and after the last)")
    val.add_argument("--val-max-images", type=int, help="validate on at most this many images")
    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, help=f"run folder (default {DEFAULT_PROJECT / DEFAULT_NAME})")
    out.add_argument("--project", type=Path, help=f"as official train.py: the run folder is PROJECT/NAME "
                                                  f"(default project {DEFAULT_PROJECT})")
    out.add_argument("--name", help=f"run name under --project (default {DEFAULT_NAME})")
    out.add_argument("--exist-ok", action="store_true", help="write into an existing run folder")
    out.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN_OR_LAST_PT",
                     help="continue an interrupted run: its folder or weights/last.pt (default: --out)")
    return parser


# Flags that map one-to-one onto TrainSettings fields.
SETTING_FLAGS = ("epochs", "img_size", "batch_size", "device", "workers", "lr_schedule", "nominal_batch",
                 "close_mosaic", "distill_weight", "max_grad_norm", "seed", "sync_bn", "ema", "amp", "val",
                 "val_period", "val_max_images")


def run_folder(args: argparse.Namespace) -> Path:
    """``--out``, else ``--project`` / ``--name`` (official train.py's names), else the default."""
    if args.out is not None and (args.project is not None or args.name is not None):
        raise ValueError("pass either --out or --project/--name, not both")
    if args.out is not None:
        return args.out
    return (args.project or DEFAULT_PROJECT) / (args.name or DEFAULT_NAME)


def run_finetune(args: argparse.Namespace) -> dict[str, Any]:
    """Runs the fine-tuning job described by ``args``; returns a summary dict."""
    from yolo_prune.api import finetune  # routes families with their own trainer (Ultralytics) to it

    settings = {name: getattr(args, name) for name in SETTING_FLAGS}
    out = run_folder(args)
    if args.resume is None and args.data is None:
        raise ValueError("--data is required (a data yaml); or pass --resume to continue a run")
    if args.resume is None and args.weights is None and args.cfg is None:
        raise ValueError("pass --weights path/to/model.pt to fine-tune, or --cfg to train a new model")
    callbacks = None
    if args.sparse:
        from yolo_prune.pruning.sparse import SparseTrainingCallback

        callbacks = SparseTrainingCallback(args.sparse, reg=args.sparse_reg)
    result = finetune(args.weights, cfg=args.cfg, data=args.data, out_dir=out, hyp=args.hyp,
                      teacher=args.teacher, resume=args.resume, exist_ok=args.exist_ok, family=args.family,
                      trust=args.trust_checkpoint, callbacks=callbacks, rename_classes=args.rename_classes, **settings)
    summary = result.summary()
    if result.is_main:
        print(f"\nfine-tuned {summary['epochs']} epochs; best fitness {summary['best_fitness']}; "
              f"weights: {summary['best']} (best), {summary['last']} (last); results: {summary['results_csv']}")
    return summary
