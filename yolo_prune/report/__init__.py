"""``yolo-prune report``: run JSONs -> one markdown + HTML page comparing the models.

    >>> from yolo_prune.report import build_report, load_entries
    >>> build_report(load_entries(["runs/prune/tiny-p50.json", "runs/eval/tiny-p50.json"]), "runs/report")

The main job can skip the files and pass entries directly (``build_report(entries, out_dir)``);
``yolo_prune.report.entries`` documents the entry keys and the JSON shapes accepted.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Iterable

from yolo_prune.report.entries import ENTRY_KEYS, entries_from_json, make_entry, merge_entries
from yolo_prune.report.render import build_report

__all__ = ["ENTRY_KEYS", "add_report_args", "build_report", "load_entries", "make_entry", "merge_entries",
           "run_report"]


def load_entries(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Entries from every JSON, merged per model.

    A folder stands for every ``*.json`` below it (sorted); there, files of other kinds (a
    sensitivity scan, hyper-parameters) are skipped with a note. A file named explicitly must
    be a run JSON.
    """
    entries: list[dict[str, Any]] = []
    for path in map(Path, paths):
        if not path.is_dir():
            entries += entries_from_json(path)
            continue
        found = sorted(path.rglob("*.json"))
        if not found:
            raise FileNotFoundError(f"{path} holds no .json run files")
        for file in found:
            try:
                entries += entries_from_json(file)
            except ValueError:
                print(f"report: skipped {file} (not a prune / eval / main-job result)")
    return merge_entries(entries)


def add_report_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the report flags to ``parser`` (shared by ``scripts/report.py`` and the CLI)."""
    parser.add_argument("inputs", nargs="+", type=Path,
                        help="run JSONs (prune reports, eval results, main-job reports) or folders of them; "
                             "the first model is the reference of the 'MACs x' column")
    parser.add_argument("--out", type=Path, default=Path("runs/report"), help="output folder")
    parser.add_argument("--title", default="yolo-prune report", help="page title")
    parser.add_argument("--force", action="store_true", help="overwrite an existing report in --out")
    return parser


def run_report(args: argparse.Namespace) -> dict[str, Path]:
    """Builds the page described by ``args``; returns the written paths."""
    if (args.out / "report.md").exists() and not args.force:
        raise FileExistsError(f"{args.out / 'report.md'} already exists; pass --force to overwrite it or "
                              f"choose another --out")
    entries = load_entries(args.inputs)
    command = getattr(args, "command_line", None)  # set by yolo_prune.cli.main
    notes = ([f"Command: {command}"] if command else []) + [f"Inputs: {', '.join(str(p) for p in args.inputs)}"]
    paths = build_report(entries, args.out, title=args.title, notes=notes)
    print(f"report: {paths['markdown']} and {paths['html']} ({len(entries)} models)")
    return paths
