"""Training checkpoints: ``last.pt`` for exact resume, ``best.pt`` for deployment.

Both are written by the family's adapter (``adapter.save``), so they are the family's own
format, and read back by it (``adapter.load_training_checkpoint``) under the family's own
allow-list. What this module adds:

* ``last.pt`` keeps ``model`` and ``ema`` in float32 (the official files hold float16, which
  would make a resumed run drift) plus ``optimizer``, ``updates``, ``epoch`` and a
  ``train_state`` entry of plain values: the resolved settings, the hyp, the grad-scaler
  state, the data / weights paths. ``--resume last.pt`` needs nothing else.
* ``best.pt`` is the validated EMA model in float16 without optimizer (as YOLOv7's
  ``strip_optimizer`` leaves its files).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from yolo_prune.engine.ema import ModelEMA
from yolo_prune.io import LoadedModel

if TYPE_CHECKING:  # annotations only: the engine takes an adapter, it never imports the families
    from yolo_prune.adapters.base import DetectorAdapter

TRAIN_STATE_KEY = "train_state"


def save_last(path: str | Path, *, adapter: DetectorAdapter, model: nn.Module, names: list[str], epoch: int,
              best_fitness: float | None, results_text: str, ema: ModelEMA | None,
              optimizer: torch.optim.Optimizer, train_state: dict[str, Any], meta: dict | None = None) -> Path:
    """Writes the full float32 training state (atomically, through the adapter)."""
    extra = {"epoch": epoch, "best_fitness": best_fitness or 0.0, "training_results": results_text,
             "ema": ema.ema if ema is not None else None, "updates": ema.updates if ema is not None else None,
             "optimizer": optimizer.state_dict(), "half": False, TRAIN_STATE_KEY: train_state}
    return adapter.save(_as_loaded(adapter, model, names, meta), path, extra=extra)


def save_best(path: str | Path, *, adapter: DetectorAdapter, model: nn.Module, names: list[str], epoch: int,
              best_fitness: float | None, results_text: str, ema: ModelEMA | None,
              meta: dict | None = None) -> Path:
    """Writes the deployable model (the EMA when there is one) in float16, without optimizer."""
    deploy = ema.ema if ema is not None else model
    extra = {"epoch": epoch, "best_fitness": best_fitness or 0.0, "training_results": results_text,
             "ema": None, "updates": None, "optimizer": None, "half": True}
    return adapter.save(_as_loaded(adapter, deploy, names, meta), path, extra=extra)


def _as_loaded(adapter: DetectorAdapter, model: nn.Module, names: list[str], meta: dict | None) -> LoadedModel:
    return LoadedModel(model=model, family=adapter.name, names=list(names), stride=model_stride(model),
                       meta=dict(meta or {}))


def model_stride(model: nn.Module) -> list[int]:
    """The model's ``stride`` attribute as a list of ints (empty when it has none)."""
    stride = getattr(model, "stride", None)
    if isinstance(stride, torch.Tensor):
        return [int(v) for v in stride.flatten().tolist()]
    return [int(v) for v in stride] if stride is not None else []


def resolve_resume_path(resume: str | Path | bool, out_dir: str | Path | None = None) -> Path:
    """``--resume`` value -> the ``last.pt`` to continue from.

    Accepts a ``last.pt`` path, a run folder (``<run>/weights/last.pt``), or ``True`` meaning
    ``out_dir``'s checkpoint.
    """
    if resume is True:
        if out_dir is None:
            raise ValueError("resume=True needs the run folder: pass --resume path/to/run or path/to/last.pt")
        resume = out_dir
    path = Path(resume)
    if path.is_dir():
        path = path / "weights" / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"cannot resume: {path} does not exist; pass --resume with a run folder "
                                f"or its weights/last.pt")
    return path


def check_resumable(ckpt: dict, path: Path) -> dict[str, Any]:
    """The ``train_state`` of a ``last.pt``, or a clear error when the file cannot be resumed."""
    state = ckpt.get(TRAIN_STATE_KEY)
    if not isinstance(state, dict) or ckpt.get("optimizer") is None:
        raise ValueError(f"{path} has no training state (optimizer / settings), so it cannot be resumed; "
                         f"start a new run with --weights {path} instead")
    epochs = state["settings"]["epochs"]
    if int(ckpt["epoch"]) + 1 >= epochs:
        raise ValueError(f"{path} already finished all {epochs} epochs; to train longer start a new run with "
                         f"--weights {path} --epochs N")
    return state
