"""Which family a checkpoint or cfg belongs to, and loading it through that family's adapter.

A ``torch.save`` file names every class it pickles; each adapter lists the top-level packages
its checkpoints pickle (``pickle_packages``), so a file is recognised without running it. A
cfg is recognised by the adapter whose ``owns_cfg`` accepts it.
"""
from __future__ import annotations

from pathlib import Path

from yolo_prune.adapters.base import ADAPTERS, DetectorAdapter, get_adapter
from yolo_prune.io import LoadedModel, check_readable
from yolo_prune.io.inspect import pickle_globals


def load_model(weights: str | Path | None = None, *, cfg: str | Path | None = None, family: str | None = None,
               trust: bool = False, nc: int | None = None) -> LoadedModel:
    """Loads a checkpoint (any registered family) or builds a fresh model from a cfg.

    Args:
        weights: A checkpoint file. Its family is recognised from the classes it pickles.
        cfg: A model cfg (path or known name): the model to build when ``weights`` is None,
            or the architecture for a bare state dict in ``weights``.
        family: Skip recognition and use this adapter (``yolo_prune.adapters.ADAPTERS`` names).
        trust: Allow arbitrary pickled code (only for files from a source you trust).
        nc: Number of classes when building from a cfg.

    Raises:
        ValueError: nothing to load, or the family cannot be told (the message lists ``--family`` values).
        CheckpointError: the file is missing, unreadable or refused by the family's loader.

    >>> from yolo_prune import load
    >>> load(cfg="yolov7-tiny", nc=3)  # a checkpoint: load("yolov7-tiny.pt")
    LoadedModel(yolov7, 3 classes, 6.02 M params, stride [8, 16, 32], source=yolov7-tiny)
    """
    if weights is None and cfg is None:
        raise ValueError("nothing to load: pass --weights path/to/model.pt, or --cfg to build a new model")
    adapter = get_adapter(family) if family else adapter_for(weights, cfg)
    if weights is None:
        return adapter.build(cfg, nc=nc)
    return adapter.load(weights, trust=trust, cfg=cfg)


def adapter_for(weights: str | Path | None = None, cfg: str | Path | None = None) -> DetectorAdapter:
    """The adapter of the family ``weights`` (by its pickled classes) or else ``cfg`` belongs to."""
    adapters = [ADAPTERS.get(name)() for name in ADAPTERS]
    if weights is not None:
        packages = _pickled_packages(Path(weights))
        matches = [a for a in adapters if packages & set(a.pickle_packages)]
        if len(matches) == 1:
            return matches[0]
    for adapter in adapters:
        if cfg is not None and adapter.owns_cfg(cfg):
            return adapter
    what = f"{weights} (it pickles no model class of a known family: a bare state dict needs --cfg)" \
        if weights is not None else str(cfg)
    raise ValueError(f"cannot tell which detector family {what} belongs to; pass --family "
                     f"({', '.join(ADAPTERS.names())})")


def _pickled_packages(path: Path) -> set[str]:
    """Top-level packages of the globals the file's pickle names (empty for a legacy-format file)."""
    check_readable(path)  # a clear CheckpointError for a missing, truncated or foreign file
    try:
        return {module.split(".")[0] for module, _ in pickle_globals(path)}
    except ValueError:
        return set()  # legacy (non-zip) torch file: only --family or --cfg can tell
