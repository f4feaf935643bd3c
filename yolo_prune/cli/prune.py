"""``yolo-prune prune`` / ``scripts/prune.py``: flags -> ``PruneSettings`` -> ``run_prune``."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from yolo_prune.cli.common import add_model_source_args, format_models, setting, settings_from_args, switch
from yolo_prune.jobs.prune import run_prune
from yolo_prune.pruning.importance import IMPORTANCES
from yolo_prune.pruning.settings import PRUNE_MODES, SPARSITY_SCOPES, PruneSettings
from yolo_prune.reporting import format_table

HELP = "channel-prune a checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the prune flags to ``parser`` (shared by the script and the CLI)."""
    add_model_source_args(parser.add_argument_group("model"),
                          weights_help="checkpoint to prune (official YOLOv7 or ultralytics .pt)",
                          cfg_help="model cfg: builds a random model when --weights is absent, "
                                   "or gives the architecture of a bare state dict")
    _add_pruning_args(parser.add_argument_group("pruning"))
    out = parser.add_argument_group("output")
    setting(out, "--out", settings=PruneSettings, dest="out", type=Path,
            help="pruned checkpoint path (default: beside --weights, named after what was applied, e.g. "
                 "*-pruned50.pt)")
    switch(out, "--force", dest="force", help="overwrite an existing --out")
    switch(out, "--no-latency", dest="latency", off=True, help="skip the CPU latency measurement")
    return parser


def _add_pruning_args(how: argparse._ArgumentGroup) -> None:
    s = PruneSettings
    setting(how, "--ratio", "--pruning-ratio", settings=s, dest="pruning_ratio", type=float, help="fraction of channels to remove, in [0, 1)")
    setting(how, "--importance", settings=s, dest="importance", help=f"criterion: {', '.join(IMPORTANCES.names())}")
    switch(how, "--global", dest="global_pruning", help="rank channels globally")
    setting(how, "--round-to", settings=s, dest="round_to", type=int, help="keep channel counts multiples of this")
    setting(how, "--max-ratio", settings=s, dest="max_pruning_ratio", type=float,
            help="no layer loses more than this fraction")
    setting(how, "--min-channels", settings=s, dest="min_channels", type=int,
            help="no layer keeps fewer output channels (a warning says what the ratio then achieved)")
    how.add_argument("--layer-ratio", action="append", default=None, metavar="GLOB=RATIO",
                     help="per-layer ratio by module-name glob, e.g. 'model.77*=0.2' (repeatable)")
    setting(how, "--recipe", settings=s, dest="recipe",
            help="prune recipe yaml, or a name in configs/prune/ (replaces the ratio flags)")
    setting(how, "--steps", settings=s, dest="iterative_steps", type=int,
            help="reach the ratio in this many steps (with --data: a short fine-tune between steps)")
    setting(how, "--compensate", settings=s, dest="compensate", type=Path, metavar="DATA",
            help="data yaml: refit each conv that loses inputs by least squares on its train images "
                 "(keeps much of the accuracy before fine-tuning)")
    setting(how, "--calibration-images", settings=s, dest="calibration_images", type=int,
            help="train images that fit --compensate")
    setting(how, "--data", settings=s, dest="data", type=Path,
            help="data yaml: iterative pruning fine-tunes on it between --steps")
    setting(how, "--epochs-per-step", settings=s, dest="epochs_per_step", type=int,
            help="fine-tune epochs after each step (with --data)")
    setting(how, "--workers", settings=s, dest="workers", type=int,
            help="data-loading processes of those fine-tunes and of the scoring (with --data)")
    switch(how, "--rename-classes", dest="rename_classes",
           help="with --data: the model has as many classes as the data under other names; take the data's")
    setting(how, "--device", settings=s, dest="device",
            help="device of the latency measurement and of the fine-tunes between --steps: cpu, 0 or '' (GPU if any)")
    setting(how, "--mode", settings=s, dest="mode", choices=PRUNE_MODES,
            help="channel: remove whole channels; unstructured: zero single weights "
                 "(a contrast: dense hardware does not get faster)")
    setting(how, "--sparsity", settings=s, dest="sparsity", type=float,
            help="fraction of weights zeroed (--mode unstructured)")
    setting(how, "--scope", settings=s, dest="scope", choices=SPARSITY_SCOPES,
            help="unstructured: the same sparsity per layer, or one global threshold")
    setting(how, "--img", "--img-size", settings=s, dest="img_size", type=int, help="input size for tracing, MACs and latency")
    setting(how, "--seed", settings=s, dest="seed", type=int, help="seeds the random criterion and synthetic batches")
    switch(how, "--dry-run", dest="dry_run", help="list the pruning groups, change nothing")


def parse_layer_ratios(items: list[str] | None) -> dict[str, float] | None:
    """``['model.7*=0.2']`` -> ``{'model.7*': 0.2}`` with a clear error on a malformed item."""
    if items is None:
        return None
    ratios = {}
    for item in items:
        pattern, sep, value = item.rpartition("=")
        try:
            ratios[pattern] = float(value)
        except ValueError:
            sep = ""
        if not sep or not pattern:
            raise ValueError(f"--layer-ratio {item!r} must look like GLOB=RATIO, e.g. 'model.77*=0.2'")
    return ratios


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Runs the prune job of ``args``; prints the before/after table (a dry run: the groups)."""
    settings = settings_from_args(PruneSettings, args, layer_ratios=parse_layer_ratios(args.layer_ratio))
    report = run_prune(settings)
    if settings.dry_run:
        print(format_groups(report["groups"]))
        return report
    print(format_models({"original": report["before"], "pruned": report["after"]}))
    print(f"\nsaved {report['out']} (report: {Path(report['out']).with_suffix('.json')}"
          + (f", cfg: {report['model_cfg']})" if report.get("model_cfg") else ")"))
    print(f"to train it further: {report['train_note']}" if report.get("model_cfg") else
          f"warning: {report['train_note']}")
    return report


def format_groups(groups: list[dict[str, Any]]) -> str:
    """The dry run's table: each group's root conv, width, the channels it would lose, its coupled layers."""
    rows = [[g["root"], g["channels"], g["pruned"], ", ".join(g["layers"])] for g in groups]
    return format_table(rows, ["group root", "channels", "would lose", "coupled layers"])
