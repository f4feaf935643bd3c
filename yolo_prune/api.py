"""The public API: load, prune, finetune, evaluate, benchmark.

Scripts and the CLI call only these functions (and the adapters through them), so the
same job can be scripted from Python:

    >>> import yolo_prune
    >>> loaded = yolo_prune.load("yolov7-tiny.pt")
    >>> result = yolo_prune.prune(loaded, pruning_ratio=0.5, importance="l2", img_size=640)
    >>> yolo_prune.save(loaded, "yolov7-tiny-p50.pt")
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from yolo_prune.adapters import ADAPTERS, DetectorAdapter, LoadedModel, get_adapter
from yolo_prune.io.inspect import pickle_globals
from yolo_prune.pruning import PruneResult, prune_model


def load(weights: str | Path | None = None, *, cfg: str | Path | None = None, family: str | None = None,
         trust: bool = False, nc: int | None = None) -> LoadedModel:
    """Loads a checkpoint (any registered family) or builds a fresh model from a cfg.

    Args:
        weights: A checkpoint file. Its family is recognised from the classes it pickles.
        cfg: A model cfg (path or known name): the model to build when ``weights`` is None,
            or the architecture for a bare state dict in ``weights``.
        family: Skip recognition and use this adapter (``yolov7``, ``ultralytics``).
        trust: Allow arbitrary pickled code (only for files from a source you trust).
        nc: Number of classes when building from a cfg.
    """
    if weights is None and cfg is None:
        raise ValueError("nothing to load: pass --weights path/to/model.pt, or --cfg to build a new model")
    adapter = get_adapter(family) if family else _adapter_for(weights, cfg)
    if weights is None:
        return adapter.build(cfg, nc=nc)
    return adapter.load(weights, trust=trust, cfg=cfg)


def adapter_of(loaded: LoadedModel) -> DetectorAdapter:
    """The adapter of a loaded model's family."""
    return get_adapter(loaded.family)


def prune(loaded: LoadedModel, **settings: Any) -> PruneResult:
    """Prunes ``loaded.model`` in place; ``settings`` are those of ``prune_model``."""
    result = prune_model(loaded.model, adapter_of(loaded), **settings)
    loaded.model = result.model
    if not result.dry_run:
        loaded.meta["pruning"] = result.summary()["settings"]
    return result


def save(loaded: LoadedModel, path: str | Path, *, extra: dict | None = None) -> Path:
    """Writes ``loaded`` atomically in its family's own checkpoint format."""
    return adapter_of(loaded).save(loaded, path, extra=extra)


def _adapter_for(weights: str | Path | None, cfg: str | Path | None) -> DetectorAdapter:
    adapters = [ADAPTERS.get(name)() for name in ADAPTERS]
    if weights is not None:
        try:
            packages = {module.split(".")[0] for module, _ in pickle_globals(weights)}
        except ValueError:
            # not a zip checkpoint: let the default family's loader explain what is wrong
            return get_adapter("yolov7")
        matches = [a for a in adapters if packages & set(a.pickle_packages)]
        if len(matches) == 1:
            return matches[0]
        if not matches and cfg is None:
            return get_adapter("yolov7")  # e.g. a bare state dict: its loader asks for --cfg
    for adapter in adapters:
        if cfg is not None and adapter.owns_cfg(cfg):
            return adapter
    raise ValueError(
        f"cannot tell which detector family {weights or cfg} belongs to; pass --family "
        f"({', '.join(ADAPTERS.names())})")
