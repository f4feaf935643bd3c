"""``yolo-prune finetune`` / ``scripts/finetune.py``: flags -> ``TrainSettings`` fields -> one ``finetune`` call.

Runs alone or under ``torchrun --nproc_per_node N`` (DDP: nccl on GPU, gloo on CPU). Every
flag left out means the default of ``TrainSettings`` (defaults live there only).
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from yolo_prune.cli.common import add_model_source_args, add_project_args, project_folder, setting, switch
from yolo_prune.engine.finetune import DEFAULT_OUT_DIR
from yolo_prune.engine.optim import SCHEDULES
from yolo_prune.engine.settings import TrainSettings
from yolo_prune.jobs.finetune import finetune
from yolo_prune.pruning.sparse import DEFAULT_REG

HELP = "fine-tune (or train from a cfg) on a COCO-format dataset"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
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
    _add_training_args(parser.add_argument_group("training"))
    val = parser.add_argument_group("validation")
    switch(val, "--no-val", dest="val", off=True, help="skip validation")
    setting(val, "--val-period", settings=TrainSettings, dest="val_period", type=int,
            help="validate every N epochs (and after the last)")
    setting(val, "--val-max-images", settings=TrainSettings, dest="val_max_images", type=int,
            help="validate on at most this many images")
    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, help=f"run folder (default: {DEFAULT_OUT_DIR})")
    add_project_args(out, default=Path(DEFAULT_OUT_DIR), what="the run folder is")
    switch(out, "--exist-ok", dest="exist_ok", help="write into an existing run folder")
    out.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN_OR_LAST_PT",
                     help="continue an interrupted run: its folder or weights/last.pt (default: --out)")
    return parser


def _add_training_args(run: argparse._ArgumentGroup) -> None:
    s = TrainSettings
    setting(run, "--epochs", settings=s, dest="epochs", type=int, help="total epochs")
    setting(run, "--img", "--img-size", settings=s, dest="img_size", type=int, help="train/val size in pixels")
    setting(run, "--batch", "--batch-size", settings=s, dest="batch_size", type=int,
            help="total batch over all processes")
    setting(run, "--device", settings=s, dest="device",
            help="'' (GPU if any), cpu, 0, cuda:1; under torchrun each rank takes its own GPU")
    setting(run, "--workers", settings=s, dest="workers", type=int, help="data-loading processes per rank")
    setting(run, "--lr-schedule", settings=s, dest="lr_schedule", choices=SCHEDULES, help="lr decay")
    setting(run, "--nominal-batch", settings=s, dest="nominal_batch", type=int,
            help="accumulate gradients up to this many images")
    setting(run, "--close-mosaic", settings=s, dest="close_mosaic", type=int,
            help="turn mosaic off for this many final epochs")
    setting(run, "--distill-weight", settings=s, dest="distill_weight", type=float,
            help="weight of the distillation term")
    setting(run, "--max-grad-norm", settings=s, dest="max_grad_norm", type=float,
            help="clip the gradient norm (default: no clipping)")
    setting(run, "--seed", settings=s, dest="seed", type=int, help="base random seed")
    switch(run, "--sync-bn", dest="sync_bn", help="SyncBatchNorm under DDP (CUDA only)")
    switch(run, "--no-ema", dest="ema", off=True, help="no weight EMA")
    switch(run, "--no-amp", dest="amp", off=True, help="float32 throughout (default: fp16 on CUDA, bf16 on CPUs with native bf16)")
    switch(run, "--no-channels-last", dest="channels_last", off=True,
           help="train in the NCHW layout (default NHWC: faster convolutions; files stay NCHW)")
    run.add_argument("--sparse", help="sparse training before pruning: bn_l1 (network slimming), "
                                      "bn_group_lasso or group_norm (torch-pruning regularisers)")
    run.add_argument("--sparse-reg", type=float, help=f"sparse-training penalty (default: {DEFAULT_REG})")


def run_folder(args: argparse.Namespace) -> Path:
    """``--out``, else ``--project`` / ``--name`` (official train.py's names), else the default."""
    return project_folder(args, Path(DEFAULT_OUT_DIR))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Runs the fine-tuning job described by ``args``; prints where the weights are."""
    names = {f.name for f in dataclasses.fields(TrainSettings)}
    settings = {k: v for k, v in vars(args).items() if k in names}
    callbacks = None
    if args.sparse:
        from yolo_prune.pruning.sparse import SparseTrainingCallback

        callbacks = SparseTrainingCallback(args.sparse, reg=args.sparse_reg or DEFAULT_REG)
    result = finetune(args.weights, cfg=args.cfg, data=args.data, out_dir=run_folder(args), hyp=args.hyp,
                      teacher=args.teacher, resume=args.resume, exist_ok=bool(args.exist_ok), family=args.family,
                      trust=args.trust, callbacks=callbacks, rename_classes=args.rename_classes or None, **settings)
    summary = result.summary()
    if result.is_main:
        print(f"\nfine-tuned {summary['epochs']} epochs; best fitness {summary['best_fitness']}; "
              f"weights: {summary['best']} (best), {summary['last']} (last); results: {summary['results_csv']}")
    return summary


def interrupted_hint(args: argparse.Namespace) -> str:
    """After Ctrl-C / SIGTERM: where the run's last state is and the command that continues it."""
    run = _interrupted_run(args)
    last = run / "weights" / "last.pt"
    if not last.is_file():
        return f"no epoch had finished, so {run} holds no checkpoint: run the same command again to start over"
    if not (run / "hyp.yaml").is_file():  # a run of a family's own trainer (Ultralytics) resumes there
        return f"the last state is {last}; continue it with that trainer's resume (YOLO('{last}').train(resume=True))"
    return f"the last state is {last} (intact); continue with: yolo-prune finetune --resume {run}"


def _interrupted_run(args: argparse.Namespace) -> Path:
    if isinstance(args.resume, (str, Path)):
        path = Path(args.resume)
        if path.suffix != ".pt":
            return path
        return path.parents[1] if path.parent.name == "weights" else path.parent
    return run_folder(args)
