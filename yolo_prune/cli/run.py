"""``yolo-prune run``: flags -> ``PipelineSettings`` -> ``main_job`` (the main job, ``yolo_prune.pipeline``)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from yolo_prune.cli.common import setting, settings_from_args, switch
from yolo_prune.pipeline import PipelineSettings, main_job

HELP = "the main job: prune -> fine-tune -> evaluate -> report (synthetic demo by default)"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the main job's flags; each defaults to ``PipelineSettings``."""
    s = PipelineSettings
    setting(parser, "--weights", settings=s, dest="weights", type=Path,
            help="your checkpoint (default: the shipped demo baseline)")
    switch(parser, "--train-baseline", dest="train_baseline",
           help="train the baseline from --cfg for --baseline-epochs instead of the shipped one")
    setting(parser, "--cfg", settings=s, dest="cfg", help="model cfg of a baseline trained here")
    setting(parser, "--data", settings=s, dest="data", type=Path,
            help="your data yaml (default: generate the synthetic shapes set)")
    setting(parser, "--profile", settings=s, dest="profile", help="synthetic profile: demo or hard")
    setting(parser, "--out", settings=s, dest="out", type=Path, help="run folder; re-running continues")
    setting(parser, "--img", "--img-size", settings=s, dest="img_size", type=int, help="train/eval size")
    setting(parser, "--baseline-epochs", settings=s, dest="baseline_epochs", type=int, help="baseline training epochs")
    setting(parser, "--finetune-epochs", settings=s, dest="finetune_epochs", type=int,
            help="fine-tune budget of both arms (the pruned model and the control)")
    setting(parser, "--batch", "--batch-size", settings=s, dest="batch_size", type=int, help="batch size")
    setting(parser, "--ratio", settings=s, dest="ratio", type=float,
            help="one channel pruning ratio for every group (default: per-stage ratios from a sensitivity scan)")
    setting(parser, "--reduction", settings=s, dest="reduction", type=float,
            help="the scan's allocation target: baseline GMACs / pruned GMACs")
    setting(parser, "--recipe", settings=s, dest="recipe", type=Path,
            help="prune with this recipe yaml (or a name in configs/prune/) instead")
    setting(parser, "--scan-images", settings=s, dest="scan_images", type=int,
            help="train images (unaugmented) that score the sensitivity scan")
    setting(parser, "--scan-ratios", settings=s, dest="scan_ratios", type=float, nargs="+",
            help="ratios the scan tries per stride stage (the largest caps the allocation)")
    setting(parser, "--importance", settings=s, dest="importance", help="channel criterion")
    setting(parser, "--round-to", settings=s, dest="round_to", type=int, help="keep channel counts multiples of this")
    setting(parser, "--min-channels", settings=s, dest="min_channels", type=int,
            help="no group keeps fewer output channels (the scan and the allocation see it too)")
    switch(parser, "--distill", dest="distill", help="distil from the baseline (pruned arm only)")
    switch(parser, "--compensate", dest="compensate",
           help="refit each conv that loses inputs by least squares on train images (pruned arm only)")
    setting(parser, "--calibration-images", settings=s, dest="calibration_images", type=int,
            help="train images that fit --compensate")
    switch(parser, "--no-control", dest="control", off=True, help="skip the control arm (no retention figure)")
    switch(parser, "--sequential-arms", dest="parallel_arms", off=True,
           help="train the control after the pruned arm, in this process (default on CPU: side by side)")
    setting(parser, "--hyp-finetune", settings=s, dest="hyp_finetune",
            help="fine-tuning hyp of both arms (default: configs/hyp/hyp.finetune.yaml)")
    setting(parser, "--synthetic-train", settings=s, dest="synthetic_train", type=int, help="synthetic train images")
    setting(parser, "--synthetic-val", settings=s, dest="synthetic_val", type=int, help="synthetic val images")
    setting(parser, "--device", settings=s, dest="device", help="'' (GPU if any), cpu, 0, cuda:1")
    setting(parser, "--workers", settings=s, dest="workers", type=int, help="data-loading processes")
    setting(parser, "--seed", settings=s, dest="seed", type=int, help="random seed")
    switch(parser, "--trust-checkpoint", dest="trust", help="allow arbitrary pickled code in --weights")
    return parser


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Runs (or continues) the main job of ``args``."""
    return main_job(settings_from_args(PipelineSettings, args), command_line=getattr(args, "command_line", None))


def interrupted_hint(args: argparse.Namespace) -> str:
    """After Ctrl-C / SIGTERM: the job continues where it stopped when run again."""
    return ("finished stages are kept and an interrupted fine-tune resumes from its last.pt: run the same command "
            "again to continue")
