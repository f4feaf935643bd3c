"""``yolo-prune report`` / ``scripts/report.py``: run JSONs -> one markdown + HTML page (``write_report``)."""
from __future__ import annotations

import argparse
import inspect
from pathlib import Path
from typing import Any

from yolo_prune.report import write_report

HELP = "one page comparing run JSONs"
DEFAULT_OUT = Path("runs/report")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the report flags to ``parser`` (shared by ``scripts/report.py`` and the CLI)."""
    title = inspect.signature(write_report).parameters["title"].default
    parser.add_argument("inputs", nargs="+", type=Path,
                        help="run JSONs (prune reports, eval results, main-job reports) or folders of them; "
                             "the first model is the reference of the 'MACs x' column")
    parser.add_argument("--out", type=Path, help=f"output folder (default: {DEFAULT_OUT})")
    parser.add_argument("--title", help=f"page title (default: {title})")
    parser.add_argument("--force", action="store_true", default=None, help="overwrite an existing report in --out")
    return parser


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Builds the page described by ``args``; prints where it is."""
    title = {"title": args.title} if args.title is not None else {}
    paths = write_report(args.inputs, args.out or DEFAULT_OUT, force=bool(args.force),
                         command_line=getattr(args, "command_line", None), **title)
    print(f"report: {paths['markdown']} and {paths['html']} ({paths['models']} models)")
    return paths
