"""Per-epoch results: ``results.csv`` and ``results.png`` (losses, mAP, lr), written atomically."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from yolo_prune.io import atomic_path, atomic_write_text


class ResultsLog:
    """One CSV row per epoch; the columns are the keys of the first row, in order.

    The whole file is rewritten atomically after every epoch, so a reader (or a crash)
    never sees half a row. ``text()`` is what a checkpoint stores to restore the log on resume.
    """

    def __init__(self, csv_path: str | Path, rows: list[dict[str, Any]] | None = None) -> None:
        self.csv_path = Path(csv_path)
        self.rows: list[dict[str, Any]] = list(rows or [])

    @classmethod
    def from_text(cls, csv_path: str | Path, text: str | None, *, up_to_epoch: int | None = None) -> "ResultsLog":
        """Restores a log from CSV text (e.g. a checkpoint's ``training_results``)."""
        rows = [_parse_row(r) for r in csv.DictReader(io.StringIO(text or ""))]
        if up_to_epoch is not None:
            rows = [r for r in rows if r.get("epoch", -1) <= up_to_epoch]
        return cls(csv_path, rows)

    def append(self, row: dict[str, Any]) -> None:
        """Adds one epoch's row and rewrites ``results.csv``."""
        self.rows.append(dict(row))
        atomic_write_text(self.text(), self.csv_path)

    def text(self) -> str:
        """The rows as CSV text (header first)."""
        if not self.rows:
            return ""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(self.rows[0]), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: _format(v) for k, v in row.items()} for row in self.rows)
        return buffer.getvalue()


def plot_results(rows: list[dict[str, Any]], png_path: str | Path) -> Path | None:
    """One small panel per column (losses, metrics, lr) against the epoch; None when no rows.

    Epochs are counted from 1 on integer ticks, as the training log prints them. A column with
    gaps (validation every ``val_period`` epochs) is drawn through the epochs that have a value.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no global backend switch
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    columns = [k for k in rows[0] if k != "epoch"] if rows else []
    if not columns:
        return None
    ncols = min(len(columns), 5)
    nrows = math.ceil(len(columns) / ncols)
    fig = Figure(figsize=(3.2 * ncols, 2.6 * nrows), tight_layout=True)
    FigureCanvasAgg(fig)
    for i, name in enumerate(columns):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        points = [(int(r["epoch"]) + 1, r[name]) for r in rows if isinstance(r.get(name), (int, float))]
        ax.plot([e for e, _ in points], [v for _, v in points], marker=".", linewidth=1.5)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return Path(png_path)


def _format(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def _parse_row(row: dict[str, str]) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for key, text in row.items():
        try:
            number = float(text)
            parsed[key] = int(number) if key == "epoch" else number
        except (TypeError, ValueError):
            parsed[key] = text
    return parsed
