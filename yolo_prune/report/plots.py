"""The report's figures (matplotlib, Agg backend, PNG written atomically)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from yolo_prune.io import atomic_path


def pyplot() -> Any:
    """Matplotlib's pyplot on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> Path:
    """Writes ``fig`` as a PNG atomically and closes it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    pyplot().close(fig)
    return path


def scatter_plot(entries: Sequence[dict[str, Any]], x: str, y: str, path: str | Path, *, xlabel: str, ylabel: str,
                 title: str, invert_x: bool = False) -> Path | None:
    """One labelled point per entry having both ``x`` and ``y``; None when fewer than one has."""
    points = [(e[x], e[y], e["name"]) for e in entries if e.get(x) is not None and e.get(y) is not None]
    if not points:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for px, py, _ in points:
        ax.scatter(px, py, s=36)
    ax.margins(0.1)  # room for the labels of markers at the edges
    if invert_x:
        ax.invert_xaxis()
    for (px, py, name), offset in zip(points, _label_offsets(ax, points), strict=True):
        ax.annotate(name, (px, py), textcoords="offset points", xytext=offset, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, Path(path))


def _label_offsets(ax: Any, points: Sequence[tuple[float, float, str]]) -> list[tuple[int, int]]:
    """Label offsets (points): above right of each marker, below it for the lower of two close markers."""
    ax.autoscale_view()
    shown = [tuple(ax.transData.transform((px, py))) for px, py, _ in points]
    offsets = []
    for i, (dx, dy) in enumerate(shown):
        lower = any(abs(dx - qx) < 70 and abs(dy - qy) < 14 and (dy, -i) < (qy, -j)
                    for j, (qx, qy) in enumerate(shown) if j != i)
        offsets.append((5, -11 if lower else 4))
    return offsets


def channels_plot(entries: Sequence[dict[str, Any]], path: str | Path) -> Path | None:
    """Output channels per conv (in the first model's layer order), one line per model with channels."""
    with_channels = [e for e in entries if e.get("channels")]
    if not with_channels:
        return None
    order = list(with_channels[0]["channels"])
    for e in with_channels[1:]:
        order += [n for n in e["channels"] if n not in order]
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(max(6.0, min(16.0, len(order) * 0.12)), 4.2))
    styles = ("-", "--", ":", "-.")
    for k, e in enumerate(with_channels):
        xs = [i for i, n in enumerate(order) if n in e["channels"]]
        # a fine-tuned model has its pruned model's widths: wider, then narrower dashed lines keep both visible
        ax.step(xs, [e["channels"][order[i]] for i in xs], where="mid", ls=styles[k % len(styles)],
                lw=max(3.0 - 0.8 * k, 1.0), alpha=0.8, label=e["name"])
    ax.set_xlabel("conv layer (model order)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("output channels")
    ax.set_title("Channels per layer")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, Path(path))
