"""One page comparing models: a markdown file and a self-contained HTML file with the same content."""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any, Sequence

from yolo_prune.io import atomic_write_json, atomic_write_text, staged_folder
from yolo_prune.report.entries import TIMED_ALONE, make_entry
from yolo_prune.report.plots import channels_plot, scatter_plot
from yolo_prune.reporting import format_cell, format_table

# (entry key, column header); "MACs x" is computed against the first row
COLUMNS = (("name", "model"), ("params_m", "params (M)"), ("gmacs", "GMACs"), ("macs_x", "MACs x"),
           ("file_mib", "size (MiB)"), ("map50_95", "mAP50-95"), ("map50", "mAP50"), ("latency_ms", "latency (ms)"),
           ("fps", "FPS"))


def table_rows(entries: Sequence[dict[str, Any]]) -> list[list[Any]]:
    """The table's cells, one row per entry.

    ``MACs x`` is the GMACs of the first entry of the same family over this one's (models of
    different families are not compared).
    """
    reference: dict[Any, Any] = {}
    for e in entries:
        reference.setdefault(e.get("family"), e.get("gmacs"))
    rows = []
    for e in entries:
        first = reference[e.get("family")]
        macs_x = first / e["gmacs"] if first and e.get("gmacs") else None
        rows.append([macs_x if key == "macs_x" else e.get(key) for key, _ in COLUMNS])
    return rows


def build_report(entries: Sequence[dict[str, Any]], out_dir: str | Path, *, title: str = "yolo-prune report",
                 notes: Sequence[str] = (), summary: Sequence[tuple[str, Any]] = ()) -> dict[str, Path]:
    """Writes ``report.md``, ``report.html`` (images embedded), ``plots/*.png`` and ``entries.json``.

    Args:
        entries: Models to compare (see ``yolo_prune.report.entries`` for the keys); the first is the
            reference of the ``MACs x`` column. Dicts are normalised with ``make_entry``.
        out_dir: Output folder (created).
        title: Page title.
        notes: Extra markdown lines printed under the title (e.g. the command that made the runs).
        summary: ``(label, value)`` pairs shown as a two-column table above the models (e.g. retention).

    Returns:
        ``{"markdown", "html", "entries", "<plot name>" ...}`` paths.
    """
    if not entries:
        raise ValueError("nothing to report: pass at least one run JSON (prune, eval or main-job report)")
    entries = [make_entry(e) for e in entries]
    out_dir = Path(out_dir)
    headers = [h for _, h in COLUMNS]
    rows = table_rows(entries)
    with staged_folder(out_dir) as stage:  # all the files, or (on an error) none of them
        timing = entries_timing(entries)
        plots = _make_plots(entries, stage / "plots", timing)
        captions = _captions(timing)
        markdown = _markdown(title, notes, headers, rows, plots, stage, summary, captions)
        paths = {"entries": atomic_write_json({"models": entries}, stage / "entries.json"),
                 "markdown": atomic_write_text(markdown, stage / "report.md"),
                 "html": atomic_write_text(_html(title, notes, headers, rows, plots, summary, captions),
                                           stage / "report.html"),
                 **plots}
    return {key: out_dir / path.relative_to(stage) for key, path in paths.items()}


def entries_timing(entries: Sequence[dict[str, Any]]) -> str:
    """How the FPS of the entries were measured (their ``timing``; None is a model timed alone).

    ``"label: details"``: the label titles the FPS plot, the whole is its caption.
    """
    kinds = {e.get("timing") or TIMED_ALONE for e in entries if e.get("fps") is not None}
    if len(kinds) > 1:
        return "timed in different ways: each entry's timing is in entries.json"
    return kinds.pop() if kinds else TIMED_ALONE


def _make_plots(entries: list[dict[str, Any]], plot_dir: Path, timing: str) -> dict[str, Path]:
    made = {
        "map_vs_gmacs": scatter_plot(entries, "gmacs", "map50_95", plot_dir / "map_vs_gmacs.png", xlabel="GMACs",
                                     ylabel="mAP50-95", title="Accuracy vs compute", invert_x=True),
        "fps_vs_map": scatter_plot(entries, "map50_95", "fps", plot_dir / "fps_vs_map.png", xlabel="mAP50-95",
                                   ylabel="FPS", title=f"Speed vs accuracy ({timing.split(':')[0]})"),
        "channels": channels_plot(entries, plot_dir / "channels.png"),
    }
    return {k: v for k, v in made.items() if v is not None}


def _captions(timing: str) -> dict[str, str]:
    noisy = ", so noisy" if timing == TIMED_ALONE else ""
    return {"map_vs_gmacs": "mAP50-95 vs GMACs", "fps_vs_map": f"FPS vs mAP50-95 (batch 1, {timing}{noisy})",
            "channels": "Output channels per layer, before and after pruning"}


def _markdown(title: str, notes: Sequence[str], headers: list[str], rows: list[list[Any]], plots: dict[str, Path],
              out_dir: Path, summary: Sequence[tuple[str, Any]], captions: dict[str, str]) -> str:
    rows = [[str(v).replace("|", "\\|") if isinstance(v, str) else v for v in row] for row in rows]
    lines = [f"# {title}", "", *notes, "" if notes else None]
    if summary:
        lines += [format_table([list(pair) for pair in summary], ["summary", "value"], markdown=True), ""]
    lines += [format_table(rows, headers, markdown=True), ""]
    for key, path in plots.items():
        lines += [f"## {captions[key]}", "", f"![{captions[key]}]({path.relative_to(out_dir).as_posix()})", ""]
    return "\n".join(line for line in lines if line is not None)


_STYLE = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
          "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 10px}"
          "td{text-align:right}td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}"
          "img{max-width:100%;border:1px solid #eee}")


def _inline_code(text: str) -> str:
    """Markdown `code` spans in the notes -> <code> (the text is already HTML-escaped)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def _html(title: str, notes: Sequence[str], headers: list[str], rows: list[list[Any]], plots: dict[str, Path],
          summary: Sequence[tuple[str, Any]], captions: dict[str, str]) -> str:
    esc = html.escape
    pairs = "".join(f"<tr><td>{esc(str(k))}</td><td>{esc(format_cell(v))}</td></tr>" for k, v in summary)
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(format_cell(v))}</td>" for v in row) + "</tr>" for row in rows)
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
             f"<style>{_STYLE}</style></head><body><h1>{esc(title)}</h1>",
             *(f"<p>{_inline_code(esc(n))}</p>" for n in notes),
             f"<table><tbody>{pairs}</tbody></table>" if summary else "",
             f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"]
    for key, path in plots.items():
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        parts.append(f"<h2>{esc(captions[key])}</h2><img alt='{esc(captions[key])}' "
                     f"src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
