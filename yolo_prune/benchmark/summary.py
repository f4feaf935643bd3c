"""The one model-summary row every job reports: params, GMACs, file size and measured latency."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from torch import nn

from yolo_prune.benchmark.latency import measure_latency
from yolo_prune.benchmark.settings import BenchmarkSettings
from yolo_prune.benchmark.stats import model_stats


def model_summary(model: nn.Module, img_size: int, *, fuse: Callable[[nn.Module], nn.Module] | None = None,
                  decode: Callable[[Any], Any] | None = None, file: str | Path | None = None,
                  latency: BenchmarkSettings | None = None) -> dict[str, Any]:
    """``params_m`` and ``gmacs`` at ``img_size`` (unfused: the model as saved), plus what was asked.

    Args:
        model: The detector (left unchanged).
        img_size: Input side for the MAC count (and the latency, whatever ``latency.img_size`` says).
        fuse: The family's fuse (``adapter.fuse``), applied to the copy that is timed.
        decode: The family's decode (``adapter.decode``), for the NMS stage.
        file: The checkpoint file: adds ``file_mib`` (its size on disk, MiB).
        latency: How to time the model: adds ``latency_ms`` (median forward, per image), ``fps``,
            ``end_to_end_ms``, ``device`` and the full ``measure_latency`` result as ``timing``.
    """
    row: dict[str, Any] = dict(model_stats(model, img_size))
    if file is not None:
        row["file_mib"] = Path(file).stat().st_size / 2**20
    if latency is not None:
        timing = measure_latency(model, img_size, fuse=fuse, decode=decode, **latency.latency_kwargs())
        row.update(latency_ms=timing["latency_ms_median"], fps=timing["fps"],
                   end_to_end_ms=timing["end_to_end_ms_median"], device=timing["device"], timing=timing)
    return row
