"""``yolo-prune``: one sub-command per job; each parses its flags and makes one library call.

Every sub-command lives in the library module that does the work, as a pair
``add_<job>_args(parser)`` / ``run_<job>(args)``; this file only lists them.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import shlex
import sys
from pathlib import Path
from typing import Iterator, Sequence

# name -> (module, add-args function, run function, one-line help)
COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "run": ("yolo_prune.pipeline", "add_run_args", "run_pipeline",
            "the main job: prune -> fine-tune -> evaluate -> report (synthetic demo by default)"),
    "prune": ("yolo_prune.pruning.cli", "add_prune_args", "run_prune", "channel-prune a checkpoint"),
    "finetune": ("yolo_prune.engine.cli", "add_finetune_args", "run_finetune",
                 "fine-tune (or train from a cfg) on a COCO-format dataset"),
    "eval": ("yolo_prune.evaluation.cli", "add_eval_args", "run_eval", "COCO mAP and FPS of a checkpoint"),
    "make-synthetic": ("yolo_prune.data.cli", "add_synthetic_args", "run_synthetic",
                       "write the synthetic COCO-format shapes dataset"),
    "sensitivity": ("yolo_prune.pruning.sensitivity_cli", "add_sensitivity_args", "run_sensitivity",
                    "per-group pruning sensitivity scan and ratio allocation"),
    "report": ("yolo_prune.report", "add_report_args", "run_report", "one page comparing run JSONs"),
}


def add_model_source_args(group: argparse._ArgumentGroup, *, weights_help: str, cfg_help: str,
                          trusted: str = "--weights") -> argparse._ArgumentGroup:
    """The flags every job uses to name its model: --weights, --cfg, --family, --trust-checkpoint."""
    group.add_argument("--weights", type=Path, help=weights_help)
    group.add_argument("--cfg", help=cfg_help)
    group.add_argument("--family", help="detector family, when it cannot be recognised from the file")
    group.add_argument("--trust-checkpoint", action="store_true",
                       help=f"allow arbitrary pickled code in {trusted} (only for files you trust)")
    return group


def build_parser(commands: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yolo-prune", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in commands or COMMANDS:
        module_name, add_name, _, help_text = COMMANDS[name]
        add_args = getattr(importlib.import_module(module_name), add_name)
        command = sub.add_parser(name, help=help_text, description=help_text)
        add_args(command)
        command.add_argument("--quiet", action="store_true",
                             help="print only warnings and errors (no tables, no progress bars)")
    return parser


@contextlib.contextmanager
def quiet_output(quiet: bool) -> Iterator[None]:
    """While ``quiet``: standard output is dropped and tqdm bars are off; stderr (warnings, errors) stays."""
    if not quiet:
        yield
        return
    previous = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"  # tqdm reads its defaults from TQDM_* variables
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        if previous is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = previous


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # import only the chosen command's module when it is known: keeps start-up short
    chosen = [argv[0]] if argv and argv[0] in COMMANDS else None
    args = build_parser(chosen).parse_args(argv)
    args.command_line = shlex.join(["yolo-prune", *argv])  # shown in reports, so a run can be repeated
    module_name, _, run_name, _ = COMMANDS[args.command]
    run = getattr(importlib.import_module(module_name), run_name)
    try:
        with quiet_output(args.quiet):
            run(args)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError, RuntimeError) as err:
        # expected user errors: one clear line, no traceback (set YOLO_PRUNE_DEBUG=1 for one)
        if os.environ.get("YOLO_PRUNE_DEBUG"):
            raise
        print(f"yolo-prune {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
