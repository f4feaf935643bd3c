"""Plain-text tables for the terminal and markdown reports."""
from __future__ import annotations

import os
from typing import Any, Sequence


def progress_off() -> bool:
    """Whether progress bars are off for this process (``--quiet`` sets ``TQDM_DISABLE``).

    tqdm reads its ``TQDM_*`` defaults once, at import; a bar given ``disable=`` explicitly asks here.
    """
    return os.environ.get("TQDM_DISABLE", "").lower() not in ("", "0", "false")


def format_cell(value: Any) -> str:
    """A table cell: ``-`` for None, 4 significant digits for floats."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def format_table(rows: Sequence[Sequence[Any]], headers: Sequence[str], *, markdown: bool = False) -> str:
    """Aligns ``rows`` under ``headers``; ``markdown=True`` gives a GitHub table."""
    cells = [[format_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    sep = " | " if markdown else "  "

    def line(values: Sequence[str]) -> str:
        text = sep.join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths, strict=False)))
        return f"| {text} |" if markdown else text

    rule = ("|" + "|".join("-" * (w + 2) for w in widths) + "|") if markdown else "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in cells)])
