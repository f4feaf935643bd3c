"""Ultralytics checkpoints: restricted loading, saving the dict ``ultralytics.YOLO`` loads.

Checkpoints are the dict Ultralytics writes (``{'model', 'ema', 'train_args', 'date',
'version', ...}``). Loading without ``trust`` uses Ultralytics' own restricted loader
(``weights_only=True`` plus its allow-list of Ultralytics and torch module classes);
anything outside that list is refused with a message saying how to allow it.

``import ultralytics`` costs seconds, so it happens inside the functions that need it
(``import_ultralytics``); importing this module is cheap.
"""
from __future__ import annotations

import copy
import importlib
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from yolo_prune.io import TRUST_HINT, CheckpointError, LoadedModel, atomic_torch_save, check_readable
from yolo_prune.io.plain import plain_values

FAMILY = "ultralytics"
# Checkpoint keys Ultralytics owns; everything else this toolkit records goes under 'yolo_prune'.
FILE_META = ("epoch", "best_fitness", "date", "version", "train_args")
# Module renames of old Ultralytics releases, for trusted loading of their files.
_LEGACY_MODULES = {"ultralytics.yolo.utils": "ultralytics.utils", "ultralytics.yolo.v8": "ultralytics.models.yolo",
                   "ultralytics.yolo.data": "ultralytics.data"}


def import_ultralytics(submodule: str = "") -> Any:
    """Imports ``ultralytics`` (or ``ultralytics.<submodule>``) on first use.

    Ultralytics is told not to pip-install missing packages (``YOLO_AUTOINSTALL``) unless the
    user set that variable: this toolkit works offline.
    """
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    return importlib.import_module(f"ultralytics.{submodule}" if submodule else "ultralytics")


def blocks_module() -> Any:
    """The block rewrites (``yolo_prune.adapters.ultralytics.blocks``), imported after Ultralytics' set-up."""
    import_ultralytics()
    from yolo_prune.adapters.ultralytics import blocks

    return blocks


def is_detection_model(model: nn.Module) -> bool:
    """True for an Ultralytics ``DetectionModel`` whose last layer is a ``Detect`` head."""
    if not type(model).__module__.startswith("ultralytics.") or type(model).__name__ != "DetectionModel":
        return False
    head = model.model[-1]
    return type(head).__name__ == "Detect" and type(head).__module__.startswith("ultralytics.")


def to_loaded(model: nn.Module, *, source: Path | None, meta: dict) -> LoadedModel:
    """``model`` with its class names and strides as a ``LoadedModel`` of this family."""
    names = model.names
    names = [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names)
    return LoadedModel(model=model, family=FAMILY, names=names, stride=[int(s) for s in model.stride.tolist()],
                       cfg=getattr(model, "yaml", None), source=source, meta=meta)


def load_checkpoint(path: str | Path, *, trust: bool = False) -> LoadedModel:
    """The model of a ``.pt`` written by Ultralytics or by ``save_checkpoint``, float32, eval mode.

    Takes ``ema`` when the file has one, else ``model``; parameters are made trainable again
    (except the fixed DFL) and the head's caches are cleared.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist; check the --weights path")
    ckpt = read_checkpoint(path, trust=trust)
    model = ckpt.get("ema") or ckpt.get("model")
    if not isinstance(model, nn.Module):
        raise CheckpointError(f"{path} holds no model under 'ema' or 'model'; is it an Ultralytics "
                              "training checkpoint or a file saved with YOLO.save()?")
    model = model.float().eval()
    if not is_detection_model(model):
        raise CheckpointError(f"{path} holds a {type(model).__name__}; the ultralytics adapter handles "
                              "detection models (a DetectionModel with a Detect head) only")
    make_trainable(model)
    blocks_module().reset_head_caches(model.model[-1])
    meta = {k: ckpt[k] for k in FILE_META if ckpt.get(k) is not None}
    meta.update(ckpt.get("yolo_prune") or {})  # what this toolkit recorded (pruning settings, ...)
    return to_loaded(model, source=path, meta=meta)


def read_checkpoint(path: str | Path, *, trust: bool = False) -> dict:
    """The checkpoint dict: restricted (Ultralytics' allow-list) unless ``trust``."""
    path = check_readable(path)
    tasks = import_ultralytics("nn.tasks")
    if trust:
        with tasks.temporary_modules(modules=_LEGACY_MODULES):
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
    else:
        try:
            ckpt, _ = tasks.torch_safe_load(str(path), safe_only=True)
        except (TypeError, ModuleNotFoundError, AttributeError, RuntimeError) as e:
            raise CheckpointError(
                f"{path} could not be loaded with Ultralytics' restricted loader ({type(e).__name__}: {e}). It may "
                f"reference classes outside Ultralytics' model allow-list. {TRUST_HINT[0].upper()}{TRUST_HINT[1:]}"
            ) from e
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} holds a {type(ckpt).__name__}, not an Ultralytics checkpoint dict")
    return ckpt


def save_checkpoint(loaded: LoadedModel, path: str | Path, *, extra: dict | None = None) -> Path:
    """Writes the dict Ultralytics writes for a finished model (float32) atomically; ``extra`` is merged in."""
    ul = import_ultralytics()
    model = copy.deepcopy(loaded.model).float().cpu().to(memory_format=torch.contiguous_format).eval()  # NCHW files
    model.criterion = None
    blocks_module().reset_head_caches(model.model[-1])
    train_args = dict(loaded.meta.get("train_args") or {})
    train_args.setdefault("task", "detect")
    ckpt = {
        "date": datetime.now().astimezone().isoformat(),
        "version": ul.__version__,
        "license": "AGPL-3.0 (https://ultralytics.com/license)",
        "docs": "https://docs.ultralytics.com",
        "epoch": -1,
        "best_fitness": loaded.meta.get("best_fitness"),
        "model": model,
        "ema": None,
        "updates": None,
        "optimizer": None,
        "train_args": train_args,
        "train_metrics": None,
        "train_results": None,
        "yolo_prune": {k: v for k, v in loaded.meta.items() if k not in FILE_META},
    }
    ckpt.update(extra or {})
    return atomic_torch_save(plain_values(ckpt), path)  # no numpy globals: numpy 1.x clients load it


def make_trainable(model: nn.Module) -> None:
    """Ultralytics finalises checkpoints with ``requires_grad=False``; only the DFL stays fixed."""
    dfl = {id(p) for p in model.model[-1].dfl.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) not in dfl)
