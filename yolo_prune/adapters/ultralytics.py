"""Ultralytics detectors: YOLOv3u / v5u / v6 / v8 / v10 / YOLO11 / YOLO26 (``ultralytics`` package).

What this family needs from the generic pruner:

* ``prepare_for_pruning`` rewrites every block that splits a conv's output
  (``C2f``, ``C3k2``, ``C2PSA``, ...) into a stock Ultralytics block without the split
  (see ``ultralytics_blocks``); outputs are unchanged, and the pruned model still holds
  only Ultralytics classes, so ``ultralytics.YOLO(path)`` loads it.
* ``ignored_layers``: the last box and class conv of each head branch (one-to-many and,
  for end-to-end heads such as YOLO26, one-to-one), the DFL, and the attention convs
  (attention blocks keep their width; their feed-forward channels are pruned).
* ``finish_pruning`` clears the anchor/stride caches of the ``Detect`` head.

Checkpoints are the dict Ultralytics writes (``{'model', 'ema', 'train_args', 'date',
'version', ...}``). Loading without ``trust`` uses Ultralytics' own restricted loader
(``weights_only=True`` plus its allow-list of Ultralytics and torch module classes);
anything outside that list is refused with a message saying how to allow it.

``import ultralytics`` costs seconds, so it happens inside the methods that need it;
importing this module is cheap. The real package is imported as ``ul`` to avoid any
confusion with this module's name.
"""
from __future__ import annotations

import copy
import importlib
import logging
import math
import os
import re
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import yaml
from torch import nn

from yolo_prune.adapters.base import ADAPTERS, CfgForm, DetectorAdapter, LoadedModel, LossFn
from yolo_prune.io.atomic import atomic_torch_save
from yolo_prune.io.plain import plain_values

LOGGER = logging.getLogger(__name__)

# Model cfg names Ultralytics resolves itself (yolov8n.yaml, yolo11s.yaml, yolov5nu.yaml, yolo26n.yaml, ...).
_CFG_NAME = re.compile(r"^yolo(v\d+|\d+)[a-z0-9-]*\.ya?ml$", re.IGNORECASE)
# Ultralytics' training gains (its default.yaml), used when ``loss`` gets a hyp of another family.
_LOSS_GAIN_KEYS = ("box", "cls", "dfl")
# Checkpoint keys Ultralytics owns; everything else this toolkit records goes under 'yolo_prune'.
_FILE_META = ("epoch", "best_fitness", "date", "version", "train_args")


def _ul(submodule: str = "") -> Any:
    """Imports ``ultralytics`` (or ``ultralytics.<submodule>``) on first use.

    Ultralytics is told not to pip-install missing packages (``YOLO_AUTOINSTALL``) unless the
    user set that variable: this toolkit works offline.
    """
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    return importlib.import_module(f"ultralytics.{submodule}" if submodule else "ultralytics")


def _blocks() -> Any:
    _ul()
    return importlib.import_module("yolo_prune.adapters.ultralytics_blocks")


@ADAPTERS.register("ultralytics")
class UltralyticsAdapter(DetectorAdapter):
    """Ultralytics ``DetectionModel`` with a ``Detect`` head (anchor-free, DFL or end-to-end)."""

    name = "ultralytics"
    loss_names = ("box", "cls", "dfl")
    pickle_packages = ("ultralytics",)

    def __init__(self) -> None:
        self._trace_hooks: list = []  # set by prepare_for_pruning, removed by finish_pruning

    # -- identification / construction -------------------------------------------------
    def matches(self, model: nn.Module) -> bool:
        if not type(model).__module__.startswith("ultralytics.") or type(model).__name__ != "DetectionModel":
            return False
        head = model.model[-1]
        return type(head).__name__ == "Detect" and type(head).__module__.startswith("ultralytics.")

    def owns_cfg(self, cfg: str | Path) -> bool:
        """Ultralytics cfgs have no ``anchors`` key; bare names such as ``yolo11n.yaml`` are resolved by Ultralytics."""
        path = Path(cfg)
        if path.is_file():
            d = yaml.safe_load(path.read_text()) or {}
            return isinstance(d, dict) and "anchors" not in d and _last_head_module(d) == "Detect"
        if not _CFG_NAME.match(path.name):
            return False
        try:
            d = _ul("nn.tasks").yaml_model_load(path)
        except (FileNotFoundError, OSError):
            return False
        return _last_head_module(d) == "Detect"

    def build(self, cfg: str | Path | dict, nc: int | None = None) -> LoadedModel:
        """Builds a random-init ``DetectionModel`` from a cfg (``yolov8n.yaml``, a path, or a dict)."""
        tasks = _ul("nn.tasks")
        model = tasks.DetectionModel(copy.deepcopy(cfg) if isinstance(cfg, dict) else str(cfg), nc=nc,
                                     verbose=False)
        if not self.matches(model):
            raise ValueError(f"cfg {cfg!r} does not build a detection model with a Detect head; the ultralytics "
                             "adapter handles detection cfgs such as yolov8n.yaml, yolo11n.yaml, yolo26n.yaml")
        return _loaded(model.float().eval(), source=None, meta={})

    def load(self, path: str | Path, *, trust: bool = False, cfg: str | Path | None = None) -> LoadedModel:
        """Loads a ``.pt`` written by Ultralytics (training, ``YOLO.save``) or by ``save`` here.

        Without ``trust`` only Ultralytics/torch module classes may be unpickled (Ultralytics'
        ``weights_only`` allow-list). ``cfg`` is not needed: the file holds the whole model.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist; check the --weights path")
        ckpt = _read_checkpoint(path, trust)
        model = ckpt.get("ema") or ckpt.get("model")
        if not isinstance(model, nn.Module):
            raise _checkpoint_error(f"{path} holds no model under 'ema' or 'model'; is it an Ultralytics "
                                    "training checkpoint or a file saved with YOLO.save()?")
        model = model.float().eval()
        if not self.matches(model):
            raise _checkpoint_error(f"{path} holds a {type(model).__name__}; the ultralytics adapter handles "
                                    "detection models (a DetectionModel with a Detect head) only")
        _trainable(model)
        _blocks().reset_head_caches(model.model[-1])
        meta = {k: ckpt[k] for k in _FILE_META if ckpt.get(k) is not None}
        meta.update(ckpt.get("yolo_prune") or {})  # what this toolkit recorded (pruning settings, ...)
        return _loaded(model, source=path, meta=meta)

    # -- pruning ----------------------------------------------------------------------
    def ignored_layers(self, model: nn.Module) -> list[nn.Module]:
        blocks = _blocks()
        return blocks.head_output_convs(model.model[-1]) + blocks.attention_layers(model)

    def prepare_for_pruning(self, model: nn.Module) -> nn.Module:
        """Rewrites split blocks into split-free stock blocks (identical outputs); refuses what it cannot prune."""
        if not self.matches(model):
            raise TypeError(f"the ultralytics adapter cannot prune a {type(model).__name__}; it handles Ultralytics "
                            "DetectionModel instances with a Detect head")
        blocks = _blocks()
        count = blocks.rewrite_split_blocks(model)
        if count:
            LOGGER.info("ultralytics: rewrote %d split blocks into split-free C3f/C3 blocks", count)
        if blocks.attention_layers(model):
            LOGGER.info("ultralytics: attention blocks keep their width (q/k/v, pe and proj convs are ignored); "
                        "their feed-forward hidden channels are pruned")
        head = model.model[-1]
        blocks.reset_head_caches(head)
        self._trace_hooks.extend(blocks.trace_one2one_attached(head))
        return model

    def finish_pruning(self, model: nn.Module) -> nn.Module:
        """Removes the tracing hooks of ``prepare_for_pruning`` and the head's stale anchor caches."""
        while self._trace_hooks:
            self._trace_hooks.pop().remove()
        head = model.model[-1]
        head.train(model.training)
        _blocks().reset_head_caches(head)
        return model

    def output_shapes(self, output: Any) -> list[tuple[int, ...]]:
        """Shapes pruning must keep: the raw box and class outputs of every head branch.

        Works on training output (``{'boxes', 'scores', 'feats'}``, or ``{'one2many': ...,
        'one2one': ...}``) and inference output (``(y, that dict)``) alike. The head's input
        feature maps (``feats``) are left out on purpose: pruning narrows them.
        """
        raw = output[1] if isinstance(output, (tuple, list)) else output
        branches = [raw[k] for k in ("one2many", "one2one") if k in raw] or [raw]
        return [tuple(b[k].shape) for b in branches for k in ("boxes", "scores")]

    # -- inference --------------------------------------------------------------------
    def decode(self, output: Any) -> torch.Tensor:
        """Ultralytics eval output -> ``[B, N, 5 + nc]`` with objectness 1.0.

        Handles the usual ``(y [B, 4 + nc, N] with cx, cy, w, h pixels and class scores, raw)``
        and the end-to-end head (``y [B, max_det, 6]`` with x1, y1, x2, y2, score, class),
        which becomes one-hot class scores. A bare tensor is taken as the usual layout.
        """
        y, raw = (output[0], output[1]) if isinstance(output, (tuple, list)) else (output, None)
        if raw is not None and _is_end2end_output(y, raw):
            return _decode_end2end(y, _class_count(raw))
        boxes, scores = y[:, :4], y[:, 4:]
        ones = torch.ones_like(scores[:, :1])
        return torch.cat((boxes, ones, scores), 1).transpose(1, 2).contiguous()

    def fuse(self, model: nn.Module) -> nn.Module:
        """A fused copy (Conv+BN folded, unused head branch dropped); ``model`` itself is untouched."""
        fused = copy.deepcopy(model).eval()
        return fused.fuse(verbose=False)

    # -- training ---------------------------------------------------------------------
    def loss(self, model: nn.Module, hyp: dict) -> LossFn:
        """Ultralytics' detection loss (``v8DetectionLoss``, or ``E2ELoss`` for end-to-end heads).

        ``hyp`` gains (box, cls, dfl) are used only when ``hyp`` is Ultralytics-style (it has
        ``dfl``); a YOLOv7-style hyp has gains on another scale, so Ultralytics' defaults apply.
        """
        ul_loss = _ul("utils.loss")
        args = dict(_ul("cfg").DEFAULT_CFG_DICT)
        if "dfl" in hyp:
            args.update({k: hyp[k] for k in _LOSS_GAIN_KEYS if k in hyp})
        view = SimpleNamespace(args=SimpleNamespace(**args), model=model.model, parameters=model.parameters,
                               class_weights=None)  # what the criterion reads, without changing ``model``
        end2end = getattr(model.model[-1], "one2one_cv2", None) is not None
        criterion = ul_loss.E2ELoss(view) if end2end else ul_loss.v8DetectionLoss(view)

        def loss_fn(outputs: Any, targets: torch.Tensor, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            batch = {"batch_idx": targets[:, 0], "cls": targets[:, 1:2], "bboxes": targets[:, 2:6]}
            loss, items = criterion(outputs, batch)
            return loss.sum(), torch.stack([v.detach() for v in items.values()])

        return loss_fn

    def set_classes(self, model: nn.Module, names: list[str]) -> nn.Module:
        """A fresh last conv of every class branch (``cv3``; ``one2one_cv3`` of end-to-end heads),
        biased as Ultralytics' ``Detect.bias_init``; the box branches and pruned widths stay."""
        nc, head = len(names), model.model[-1]
        if nc < 1:
            raise ValueError("a detector needs at least one class; the data names none")
        if nc != head.nc:
            for branch in (head.cv3, getattr(head, "one2one_cv3", None) or ()):
                for i, seq in enumerate(branch):
                    seq[-1] = _class_conv(seq[-1], nc, float(head.stride[i]))
            head.nc, head.no = nc, nc + head.reg_max * 4
            model.nc = nc
            model.yaml = {**model.yaml, "nc": nc}
            model.criterion = None  # built for the old class count
            _blocks().reset_head_caches(head)
        model.names = dict(enumerate(str(n) for n in names))
        return model

    def finetune(self, loaded: LoadedModel, data: str | Path, **settings: Any) -> LoadedModel:
        """Fine-tunes through Ultralytics' trainer; see ``ultralytics_train.finetune``."""
        _ul()
        from yolo_prune.adapters.ultralytics_train import finetune

        return finetune(loaded, data, **settings)

    # -- the family's own tools -------------------------------------------------------
    def cfg_form(self, model: nn.Module) -> CfgForm:
        """The model's yaml when it still builds exactly this network (an unpruned model), else why not.

        An Ultralytics yaml gives each block one width (scaled by the model's width multiple),
        from which the block derives its hidden widths, and ``Detect`` derives its own from its
        inputs: pruned widths (and the split-free blocks pruning rewrites into) have no yaml form.
        """
        cfg = getattr(model, "yaml", None)
        if not isinstance(cfg, dict):
            return CfgForm(None, "the model carries no yaml")
        with torch.random.fork_rng():  # building initialises weights: keep the caller's random stream
            rebuilt = _ul("nn.tasks").DetectionModel(copy.deepcopy(cfg), nc=model.model[-1].nc, verbose=False)
        want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
        first = next((k for k in sorted(want.keys() | got.keys()) if want.get(k) != got.get(k)), None)
        if first is None:
            return CfgForm(copy.deepcopy(cfg))
        return CfgForm(None, "Ultralytics yamls give each block one width from which it derives its hidden widths, "
                             f"and the Detect head derives its own from its inputs (first difference: {first} "
                             f"{want.get(first, 'absent')} vs {got.get(first, 'absent')} from the yaml)")

    def own_trainer_hint(self, cfg_written: bool) -> str:
        if cfg_written:
            return "ultralytics.YOLO(path).train() rebuilds it from its yaml"
        return ("plain ultralytics.YOLO(path).train() would rebuild the unpruned model from its yaml; train it with "
                "`from yolo_prune.ultralytics import YOLO` (the same class, whose train keeps the pruned model) or "
                "yolo-prune finetune")

    # -- saving -----------------------------------------------------------------------
    def save(self, loaded: LoadedModel, path: str | Path, *, extra: dict | None = None) -> Path:
        """Writes the dict Ultralytics writes for a finished model, in float32, atomically.

        ``ultralytics.YOLO(path)`` loads the file; predict, val and export work on it.
        """
        ul = _ul()
        model = copy.deepcopy(loaded.model).float().cpu().eval()
        model.criterion = None
        _blocks().reset_head_caches(model.model[-1])
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
            "yolo_prune": {k: v for k, v in loaded.meta.items() if k not in _FILE_META},
        }
        ckpt.update(extra or {})
        return atomic_torch_save(plain_values(ckpt), path)


def _loaded(model: nn.Module, *, source: Path | None, meta: dict) -> LoadedModel:
    names = model.names
    names = [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names)
    return LoadedModel(model=model, family="ultralytics", names=names,
                       stride=[int(s) for s in model.stride.tolist()], cfg=getattr(model, "yaml", None),
                       source=source, meta=meta)


def _class_conv(old: nn.Conv2d, nc: int, stride: float) -> nn.Conv2d:
    """A new ``nc``-output 1x1 conv in place of ``old``, class bias log(5 / nc / (640 / stride)^2)."""
    new = nn.Conv2d(old.in_channels, nc, 1).to(old.weight)
    with torch.no_grad():
        new.bias.fill_(math.log(5 / nc / (640 / stride) ** 2))
    return new


def _trainable(model: nn.Module) -> None:
    """Ultralytics finalises checkpoints with ``requires_grad=False``; only the DFL stays fixed."""
    dfl = {id(p) for p in model.model[-1].dfl.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) not in dfl)


def _last_head_module(cfg: dict) -> str | None:
    head = cfg.get("head") or []
    return head[-1][2] if head and isinstance(head[-1], (list, tuple)) and len(head[-1]) > 2 else None


def _read_checkpoint(path: Path, trust: bool) -> dict:
    """The checkpoint dict: restricted (Ultralytics' allow-list) unless ``trust``."""
    tasks = _ul("nn.tasks")
    if trust:
        legacy = {"ultralytics.yolo.utils": "ultralytics.utils", "ultralytics.yolo.v8": "ultralytics.models.yolo",
                  "ultralytics.yolo.data": "ultralytics.data"}
        with tasks.temporary_modules(modules=legacy):
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
    else:
        try:
            ckpt, _ = tasks.torch_safe_load(str(path), safe_only=True)
        except (TypeError, ModuleNotFoundError, AttributeError, RuntimeError) as e:
            raise _checkpoint_error(
                f"{path} could not be loaded with Ultralytics' restricted loader ({type(e).__name__}: {e}). It may "
                "reference classes outside Ultralytics' model allow-list. Pass trust=True (CLI: --trust-checkpoint) "
                "only if you trust the file's source: it then runs whatever code the file contains") from e
    if not isinstance(ckpt, dict):
        raise _checkpoint_error(f"{path} holds a {type(ckpt).__name__}, not an Ultralytics checkpoint dict")
    return ckpt


def _checkpoint_error(message: str) -> Exception:
    """The project's ``CheckpointError`` (imported late: ``yolo_prune.io.checkpoint`` imports the adapters)."""
    from yolo_prune.io.checkpoint import CheckpointError

    return CheckpointError(message)


def _class_count(raw: dict) -> int:
    branch = raw.get("one2one", raw)
    return branch["scores"].shape[1]


def _is_end2end_output(y: torch.Tensor, raw: dict) -> bool:
    """End-to-end heads return ``[B, k, 6]``; the usual layout has one column per anchor."""
    branch = raw.get("one2many", raw)
    return "one2one" in raw and y.shape[-1] != branch["boxes"].shape[-1]


def _decode_end2end(y: torch.Tensor, nc: int) -> torch.Tensor:
    xyxy, score, cls = y[..., :4], y[..., 4], y[..., 5].long().clamp_(0, nc - 1)
    cxcywh = torch.cat(((xyxy[..., :2] + xyxy[..., 2:]) / 2, xyxy[..., 2:] - xyxy[..., :2]), -1)
    scores = torch.zeros(*y.shape[:2], nc, dtype=y.dtype, device=y.device)
    scores.scatter_(-1, cls[..., None], score[..., None])
    return torch.cat((cxcywh, torch.ones_like(score[..., None]), scores), -1)
