"""Safe loading and atomic saving of official-format YOLOv7 checkpoints.

``torch.load`` runs with ``weights_only=True`` and an allow-list of exactly the globals that
official YOLOv7 checkpoints reference (their layer classes, a few ``torch.nn`` modules and
numpy's array rebuilders), so loading an untrusted file cannot run its code. Anything else
is refused with a ``CheckpointError`` naming the unexpected global; ``trust=True`` lifts the
check for files the user trusts.

The saved dict is the official one (``epoch, best_fitness, training_results, model, ema,
updates, optimizer, wandb_id``) with the model in float16, so the official repo loads it.
"""
from __future__ import annotations

import contextlib
import copy
import json
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from models import common, yolo
from yolo_prune.io import TRUST_HINT, CheckpointError, LoadedModel, atomic_torch_save, check_readable
from yolo_prune.io.plain import plain_values

FAMILY = "yolov7"
OFFICIAL_KEYS = ("epoch", "best_fitness", "training_results", "model", "ema", "updates", "optimizer", "wandb_id")
_FUSED_METHOD = "fuseforward"  # the only attribute an official fused model fetches with getattr


# -- the allow-list -------------------------------------------------------------------------------
def _fused_forward_getattr(obj: Any, name: str) -> Any:
    """``getattr`` restricted to what fused official models pickle: ``<layer>.fuseforward``."""
    if name != _FUSED_METHOD or not isinstance(obj, (common.Conv, yolo.Detect, yolo.IDetect, yolo.IAuxDetect)):
        raise CheckpointError(f"the checkpoint calls getattr({type(obj).__name__}, {name!r}), which official "
                              f"YOLOv7 files never do; {TRUST_HINT}")
    return getattr(obj, name)


def safe_globals_list() -> list:
    """Every global (plus aliases) an official YOLOv7 checkpoint may reference."""
    model_classes = [
        yolo.Model, yolo.Detect, yolo.IDetect, yolo.IAuxDetect, common.Conv, common.Concat, common.MP, common.SP,
        common.SPPCSPC, common.RepConv, common.ImplicitA, common.ImplicitM, common.ReOrg, common.DownC,
        common.Shortcut,
    ]
    torch_modules = [nn.Conv2d, nn.BatchNorm2d, nn.SiLU, nn.LeakyReLU, nn.MaxPool2d, nn.Upsample, nn.Sequential,
                     nn.ModuleList]
    reconstruct = np._core.multiarray._reconstruct
    numpy_globals = [
        np.ndarray, np.dtype, reconstruct,
        (reconstruct, "numpy.core.multiarray._reconstruct"),  # files written with numpy 1.x
        # ``best_fitness`` is an array: rebuilding its dtype needs the dtype's own class
        *(type(np.dtype(t)) for t in (np.float64, np.float32, np.float16, np.int64, np.int32, np.bool_)),
    ]
    return [*model_classes, *torch_modules, *numpy_globals, (_fused_forward_getattr, "builtins.getattr")]


@contextlib.contextmanager
def _allow_official_globals() -> Iterator[None]:
    """Allow-lists the official globals for the duration of one load (global state untouched)."""
    with torch.serialization.safe_globals(safe_globals_list()):
        yield


# -- reading --------------------------------------------------------------------------------------
def read_checkpoint(path: str | Path, *, trust: bool = False, map_location: Any = "cpu") -> Any:
    """``torch.load`` of ``path`` restricted to official YOLOv7 globals unless ``trust``.

    Raises:
        CheckpointError: missing, unreadable or truncated file, or an unexpected global.
    """
    path = check_readable(path)
    if trust:
        try:
            return torch.load(path, map_location=map_location, weights_only=False)
        except (RuntimeError, EOFError, OSError, ValueError) as e:
            raise CheckpointError(f"{path} could not be read as a torch checkpoint ({e}); it may be truncated or "
                                  f"another format: re-download or re-save it") from None
    try:
        with _allow_official_globals():
            return torch.load(path, map_location=map_location, weights_only=True)
    except CheckpointError:
        raise
    except Exception as e:  # torch raises UnpicklingError/RuntimeError/... with the reason in the text
        raise _explain_load_failure(path, e) from None


def _explain_load_failure(path: Path, error: Exception) -> CheckpointError:
    """Turns torch's weights-only failure into a message naming the culprit and the way out."""
    text = str(error)
    # torch words it "GLOBAL x.y was not an allowed global", "unsupported GLOBAL x.y whose module
    # x is blocked" or, for a class it would have to build, "but got <class 'x.y'>"
    match = re.search(r"GLOBAL (\S+)", text) or re.search(r"but got <class '([^']+)'>", text)
    if match:
        name = match.group(1)
        hint = (" It looks like an Ultralytics checkpoint: load it with --family ultralytics."
                if name.startswith("ultralytics.") else "")
        return CheckpointError(f"{path} refers to {name}, which is not one of the classes official YOLOv7 "
                               f"checkpoints contain, so it was not loaded (it could run code).{hint} "
                               f"To load it anyway, {TRUST_HINT}.")
    if "zip" in text or "archive" in text or "EOF" in text or "Ran out of input" in text:
        return CheckpointError(f"{path} could not be read ({_last_line(text)}): the file is truncated or corrupt; "
                               f"re-download or re-save it")
    return CheckpointError(f"{path} could not be loaded safely: {_last_line(text)}. "
                           f"To load it anyway, {TRUST_HINT}.")


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    informative = [ln for ln in lines if "error" in ln.lower() and "documentation" not in ln]
    return (informative or lines or ["unknown error"])[-1]


# -- interpreting ---------------------------------------------------------------------------------
def load_checkpoint(path: str | Path, *, trust: bool = False, cfg: str | Path | dict | None = None,
                    map_location: Any = "cpu") -> LoadedModel:
    """Loads an official-format YOLOv7 checkpoint as a float32 eval model.

    Takes ``ema`` when the file has one, else ``model``. A bare state dict (also
    ``{'state_dict': sd}`` or ``{'model': sd}``) needs ``cfg`` to build the architecture.

    Args:
        path: The ``.pt`` file.
        trust: Allow arbitrary pickled objects (``--trust-checkpoint``).
        cfg: Model cfg (path, family name or dict) for bare state dicts.
        map_location: Where tensors are loaded.

    Raises:
        CheckpointError: with the reason and the fix.
    """
    path = Path(path)
    ckpt = read_checkpoint(path, trust=trust, map_location=map_location)
    state_dict = _bare_state_dict(ckpt)
    if state_dict is not None:
        model = _model_from_state_dict(path, state_dict, cfg)
        meta: dict = {"from_state_dict": True}
    else:
        model, meta = _model_from_official(path, ckpt)
    model = model.float().eval()
    yolo.refresh_bookkeeping(model)
    return LoadedModel(model=model, family=FAMILY, names=model_names(model), stride=model_stride(model),
                       cfg=copy.deepcopy(getattr(model, "yaml", None)), source=path, meta=meta)


def _bare_state_dict(ckpt: Any) -> dict | None:
    """The state dict if ``ckpt`` is one (or wraps one in 'state_dict' / 'model'), else None."""
    for candidate in (ckpt, *(ckpt.get(k) for k in ("state_dict", "model") if isinstance(ckpt, dict))):
        if isinstance(candidate, dict) and candidate and all(isinstance(v, torch.Tensor) for v in candidate.values()):
            return candidate
    return None


def _model_from_official(path: Path, ckpt: Any) -> tuple[nn.Module, dict]:
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} holds a {type(ckpt).__name__}, not a YOLOv7 checkpoint dict with a 'model' "
                              f"entry; was it written by torch.save(model) of something else?")
    if "model" not in ckpt:
        keys = ", ".join(map(str, list(ckpt)[:10])) or "none"
        raise CheckpointError(f"{path} is a dict without a 'model' entry (keys: {keys}); expected an official YOLOv7 "
                              f"checkpoint, or a state dict together with --cfg")
    use_ema = isinstance(ckpt.get("ema"), nn.Module)
    model = ckpt["ema"] if use_ema else ckpt["model"]
    if not isinstance(model, yolo.Model):
        raise CheckpointError(f"{path}: ckpt['{'ema' if use_ema else 'model'}'] is a {type(model).__name__}, not a "
                              f"models.yolo.Model; is this a checkpoint of another detector family?")
    meta = {k: v for k, v in ckpt.items() if k not in ("model", "ema", "optimizer")}
    meta["best_fitness"] = _as_float(ckpt.get("best_fitness"))
    meta["from_ema"] = use_ema
    meta["has_optimizer"] = ckpt.get("optimizer") is not None
    return model, meta


def _as_float(value: Any) -> float | None:
    if value is None:
        return None
    return float(np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value).reshape(-1)[0])


def _model_from_state_dict(path: Path, state_dict: dict, cfg: str | Path | dict | None) -> yolo.Model:
    if cfg is None:
        raise CheckpointError(f"{path} is a bare state dict (tensors only, no architecture); pass the model cfg it "
                              f"was trained with, e.g. --cfg yolov7-tiny or --cfg path/to/model.yaml")
    cfg_dict = yolo.load_cfg(cfg)
    model = yolo.Model(cfg_dict, nc=_infer_nc(state_dict, cfg_dict))
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state_dict.items()
              if k in own and own[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"{path} does not match cfg {cfg if not isinstance(cfg, dict) else '(dict)'}: missing keys "
            f"{_short(missing)}, unexpected keys {_short(unexpected)}, shape mismatches (file vs cfg) "
            f"{_short(shapes)}; pass the cfg the weights were trained with (right family, width_multiple and "
            f"training/deploy form)")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state_dict.items()}, strict=True)
    return model


def _infer_nc(state_dict: dict, cfg: dict) -> int | None:
    """Number of classes from the first head output conv: ``out = na * (nc + 5)``."""
    n_layers = len(cfg["backbone"]) + len(cfg["head"])
    weight = state_dict.get(f"model.{n_layers - 1}.m.0.weight")
    anchors = cfg["anchors"]
    na = len(anchors[0]) // 2 if isinstance(anchors, list) else int(anchors)
    if weight is None or weight.shape[0] % na:
        return None
    return weight.shape[0] // na - 5


def _short(items: list[str], limit: int = 5) -> str:
    if not items:
        return "none"
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return "[" + ", ".join(items[:limit]) + "]" + more


def model_names(model: nn.Module) -> list[str]:
    """Class names of a model (a list, a dict by index, or ``0 .. nc - 1``)."""
    names = getattr(model, "names", None)
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names)]
    if names:
        return [str(n) for n in names]
    return [str(i) for i in range(int(getattr(model, "nc", 0)))]


def model_stride(model: nn.Module) -> list[int]:
    """The model's ``stride`` attribute as a list of ints."""
    stride = getattr(model, "stride", None)
    return [int(s) for s in stride.tolist()] if isinstance(stride, torch.Tensor) else list(stride or [])


# -- writing --------------------------------------------------------------------------------------
def save_checkpoint(model: nn.Module | LoadedModel, path: str | Path, *, names: list[str] | None = None,
                    epoch: int = -1, best_fitness: float = 0.0, ema: nn.Module | None = None,
                    updates: int | None = None, optimizer: dict | None = None, training_results: str | None = None,
                    half: bool = True, extra: dict | None = None, cfg: dict | None = None) -> Path:
    """Writes an official YOLOv7 checkpoint dict atomically; the caller's model is not touched.

    Args:
        model: A ``models.yolo.Model`` or a ``LoadedModel`` holding one.
        path: Destination ``.pt``.
        names: Class names (default: the model's / LoadedModel's).
        epoch: The last finished epoch (-1: a finished model), as in official files.
        best_fitness: Best validation fitness so far.
        ema: An EMA copy of the model (saved like ``model``).
        updates: EMA update count.
        optimizer: The optimizer's state dict (None: not resumable).
        training_results: The results table text.
        half: Store ``model`` / ``ema`` in float16 like official releases (False for exact resume).
        extra: Further plain-valued entries (JSON-like, tensors allowed) added to the dict.
        cfg: The model cfg stored as the saved models' ``yaml`` (what official ``train.py``
            rebuilds from), e.g. the pruned cfg; default: the model's own ``yaml``.
    """
    if isinstance(model, LoadedModel):
        names = names if names is not None else model.names
        model = model.model
    ckpt = {
        "epoch": epoch,
        # a float, not the official numpy array: under numpy 2 an array pickles numpy._core, which
        # the numpy 1.x that official YOLOv7 pins cannot import; official code reads either form
        "best_fitness": float(best_fitness or 0.0),
        "training_results": training_results,
        "model": _export_copy(model, half, names, cfg),
        "ema": _export_copy(ema, half, names, cfg) if ema is not None else None,
        "updates": updates,
        "optimizer": optimizer,
        "wandb_id": None,
    }
    for key, value in (extra or {}).items():
        if key in OFFICIAL_KEYS:
            raise ValueError(f"extra entry {key!r} collides with an official checkpoint key; pass it as an argument")
        ckpt[key] = value
    return atomic_torch_save(plain_values(ckpt), path)


def _export_copy(model: nn.Module, half: bool, names: list[str] | None, cfg: dict | None = None) -> nn.Module:
    """A detached copy ready to pickle: on CPU, float16 if ``half``, no grads, no cached grids.

    Tensors are written in the standard (NCHW) layout whatever the model trained in (a
    channels_last weight breaks the ``view`` of Conv+BN fusing in every reader).
    """
    if hasattr(model, "module") and not isinstance(model, yolo.Model):  # DDP / DataParallel wrapper
        model = model.module
    if not isinstance(model, yolo.Model):
        raise TypeError(f"save_checkpoint writes models.yolo.Model, got {type(model).__name__}; use the adapter of "
                        f"the model's family to save it")
    out = copy.deepcopy(model).cpu().to(memory_format=torch.contiguous_format)
    out = out.half() if half else out.float()
    for p in out.parameters():
        p.requires_grad_(False)
    out.zero_grad(set_to_none=True)
    if names is not None:
        head_nc = out.model[-1].nc
        if len(names) != head_nc:
            raise ValueError(f"{len(names)} class names given for a model with {head_nc} classes; "
                             f"pass one name per class")
        out.names = [str(n) for n in names]
    if cfg is not None:
        out.yaml = copy.deepcopy(cfg)
    yolo.refresh_bookkeeping(out)  # also drops the cached grids
    return out


def plain_extra(values: dict) -> dict:
    """``values`` made safe to pickle under the allow-list: JSON types only (paths -> str)."""
    return json.loads(json.dumps(values, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
