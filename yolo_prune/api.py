"""The public API: load, prune, save, finetune, evaluate, benchmark.

A facade for users: each function is one call into the library, and nothing inside the
library imports this module (the command line calls the jobs directly). The same work can
be scripted from Python (every function's docstring has an example that runs as a doctest;
``load("yolov7-tiny.pt")`` loads a checkpoint where these build a random model from its cfg):

    >>> import tempfile, pathlib, yolo_prune
    >>> loaded = yolo_prune.load(cfg="yolov7-tiny")
    >>> result = yolo_prune.prune(loaded, ratio=0.5, importance="l2", round_to=8, img_size=128)
    >>> path = yolo_prune.save(loaded, pathlib.Path(tempfile.mkdtemp()) / "yolov7-tiny-p50.pt")
    >>> yolo_prune.load(path)  # doctest: +ELLIPSIS
    LoadedModel(yolov7, 80 classes, 1.62 M params, stride [8, 16, 32], source=...yolov7-tiny-p50.pt)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from yolo_prune.adapters import DetectorAdapter, LoadedModel, get_adapter, load_model
from yolo_prune.benchmark import BenchmarkSettings, model_summary
from yolo_prune.jobs.evaluate import evaluate_model
from yolo_prune.jobs.finetune import finetune
from yolo_prune.jobs.prune import PrunedCfgWarning, cfg_note, prune_loaded, save_cfg
from yolo_prune.jobs.sensitivity import run_sensitivity, stage_allocation
from yolo_prune.pruning import PruneResult
from yolo_prune.settings import IMG_SIZE

__all__ = ["PrunedCfgWarning", "adapter_of", "benchmark", "cfg_note", "evaluate", "finetune", "get_adapter", "load",
           "prune", "save", "save_cfg", "sensitivity", "stage_allocation"]

load = load_model
evaluate = evaluate_model
sensitivity = run_sensitivity  # SensitivitySettings -> scan (+ allocation into a recipe yaml)


def adapter_of(loaded: LoadedModel) -> DetectorAdapter:
    """The adapter of a loaded model's family.

    >>> import yolo_prune
    >>> yolo_prune.api.adapter_of(yolo_prune.load(cfg="yolov7-tiny")).name
    'yolov7'
    """
    return get_adapter(loaded.family)


def prune(loaded: LoadedModel, **settings: Any) -> PruneResult:
    """Prunes ``loaded.model`` in place; ``settings`` are those of ``yolo_prune.pruning.prune_model``.

    ``ratio`` is accepted for ``pruning_ratio``; a ``PrunedCfgWarning`` says when the pruned widths
    cannot be written in the family's cfg (``save_cfg`` writes it where they can).

    >>> import yolo_prune
    >>> loaded = yolo_prune.load(cfg="yolov7-tiny")
    >>> yolo_prune.prune(loaded, ratio=0.5, round_to=8, img_size=128)
    PruneResult(params 6.23 M -> 1.62 M, GMACs 0.277 -> 0.074 (3.7x), 55 groups)
    """
    return prune_loaded(loaded, **settings)


def save(loaded: LoadedModel, path: str | Path, *, extra: dict | None = None) -> Path:
    """Writes ``loaded`` atomically in its family's own checkpoint format; returns the path.

    >>> import tempfile, pathlib, yolo_prune
    >>> path = yolo_prune.save(yolo_prune.load(cfg="yolov7-tiny"), pathlib.Path(tempfile.mkdtemp()) / "tiny.pt")
    >>> yolo_prune.load(path).nc
    80
    """
    return adapter_of(loaded).save(loaded, path, extra=extra)


def benchmark(loaded: LoadedModel, img_size: int = IMG_SIZE, **settings: Any) -> dict[str, Any]:
    """Params, GMACs and fused latency / FPS of ``loaded``: the summary row every job reports.

    ``settings`` are ``BenchmarkSettings`` fields (batch, device, runs, nms, ...). The row has
    ``params_m``, ``gmacs``, ``latency_ms``, ``fps``, ``end_to_end_ms``, ``device`` and the full
    ``measure_latency`` result as ``timing``.

    >>> import yolo_prune
    >>> row = yolo_prune.benchmark(yolo_prune.load(cfg="yolov7-tiny"), 128, runs=2, warmup=1)
    >>> f"{row['params_m']:.2f} M params, {row['gmacs']:.3f} GMACs at 128 px", row["latency_ms"] > 0
    ('6.23 M params, 0.277 GMACs at 128 px', True)
    """
    adapter = adapter_of(loaded)
    latency = BenchmarkSettings.from_dict({**settings, "img_size": img_size})
    return model_summary(loaded.model, img_size, fuse=adapter.fuse, decode=adapter.decode, latency=latency)
