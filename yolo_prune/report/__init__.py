"""``yolo-prune report``: run JSONs -> one markdown + HTML page comparing the models.

    >>> from yolo_prune.report import build_report, load_entries
    >>> build_report(load_entries(["runs/prune/tiny-p50.json", "runs/eval/tiny-p50.json"]), "runs/report")

The main job can skip the files and pass entries directly (``build_report(entries, out_dir)``);
``yolo_prune.report.entries`` documents the entry keys and the JSON shapes accepted.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable

from yolo_prune.report.entries import ENTRY_KEYS, entries_from_json, make_entry, merge_entries
from yolo_prune.report.render import build_report

__all__ = ["ENTRY_KEYS", "build_report", "load_entries", "make_entry", "merge_entries", "write_report"]

LOGGER = logging.getLogger(__name__)


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
                LOGGER.info("report: skipped %s (not a prune / eval / main-job result)", file)
    return merge_entries(entries)


def write_report(inputs: Iterable[str | Path], out_dir: str | Path, *, title: str = "yolo-prune report",
                 force: bool = False, command_line: str | None = None) -> dict[str, Any]:
    """The report job: one page comparing the models of ``inputs`` (run JSONs or folders of them).

    ``command_line`` (the CLI passes its own) is shown under the title with the inputs.

    Returns the written paths (``markdown``, ``html``, ...) and ``models``, the number of entries.

    Raises:
        FileExistsError: ``out_dir`` holds a report already and ``force`` is not set.
    """
    inputs, out_dir = [Path(p) for p in inputs], Path(out_dir)
    if (out_dir / "report.md").exists() and not force:
        raise FileExistsError(f"{out_dir / 'report.md'} already exists; pass --force to overwrite it or "
                              f"choose another --out")
    entries = load_entries(inputs)
    notes = [f"Command: `{command_line}`"] if command_line else []
    notes.append(f"Inputs: {', '.join(str(p) for p in inputs)}")
    paths = build_report(entries, out_dir, title=title, notes=notes)
    return {**paths, "models": len(entries)}
