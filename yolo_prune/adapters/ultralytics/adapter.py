"""Ultralytics detectors: YOLOv3u / v5u / v6 / v8 / v10 / YOLO11 / YOLO26 (``ultralytics`` package).

What this family needs from the generic pruner:

* ``prepare_for_pruning`` rewrites every block that splits a conv's output
  (``C2f``, ``C3k2``, ``C2PSA``, ...) into a stock Ultralytics block without the split
  (see ``yolo_prune.adapters.ultralytics.blocks``); outputs are unchanged, and the pruned model still holds
  only Ultralytics classes, so ``ultralytics.YOLO(path)`` loads it.
* ``ignored_layers``: the last box and class conv of each head branch (one-to-many and,
  for end-to-end heads such as YOLO26, one-to-one), the DFL, and the attention convs
  (attention blocks keep their width; their feed-forward channels are pruned).
* ``finish_pruning`` clears the anchor/stride caches of the ``Detect`` head.

Loading and saving are in ``checkpoint`` (Ultralytics' own dict and restricted loader),
fine-tuning in ``trainer`` (a subclass of Ultralytics' ``DetectionTrainer``).

``import ultralytics`` costs seconds, so it happens inside the methods that need it
(``checkpoint.import_ultralytics``); importing this module is cheap.
"""
from __future__ import annotations

import copy
import logging
import math
import re
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import torch
import yaml
from torch import nn

from yolo_prune.adapters.base import ADAPTERS, CfgForm, DetectorAdapter, LoadedModel, LossFn
from yolo_prune.adapters.ultralytics import checkpoint
from yolo_prune.io import CheckpointError
from yolo_prune.io.lock import run_lock

if TYPE_CHECKING:  # annotations only
    from yolo_prune.engine.finetune import FinetuneResult

LOGGER = logging.getLogger(__name__)

# Model cfg names Ultralytics resolves itself (yolov8n.yaml, yolo11s.yaml, yolov5nu.yaml, yolo26n.yaml, ...).
_CFG_NAME = re.compile(r"^yolo(v\d+|\d+)[a-z0-9-]*\.ya?ml$", re.IGNORECASE)
# Ultralytics' training gains (its default.yaml), used when ``loss`` gets a hyp of another family.
_LOSS_GAIN_KEYS = ("box", "cls", "dfl")
# Engine fine-tuning setting -> the name Ultralytics' trainer takes it under (``nbs`` is its nominal
# batch). ``None``: accepted without effect (that trainer validates every epoch, writes into its own
# run folder and records its own provenance). Any other setting is refused, not silently dropped.
_TRAINER_SETTINGS = {"epochs": "epochs", "img_size": "img_size", "batch_size": "batch_size", "device": "device",
                     "workers": "workers", "seed": "seed", "nominal_batch": "nbs", "val_period": None,
                     "exist_ok": None, "record": None, "rename_classes": "rename_classes"}


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
        """An Ultralytics ``DetectionModel`` with a ``Detect`` head."""
        return checkpoint.is_detection_model(model)

    def example_model(self, nc: int = 3) -> LoadedModel:
        """yolo11n (C3k2 split blocks, C2PSA attention, DFL head): the smallest scale, random weights."""
        return self.build("yolo11n.yaml", nc=nc)

    def owns_cfg(self, cfg: str | Path) -> bool:
        """Ultralytics cfgs have no ``anchors`` key; bare names such as ``yolo11n.yaml`` are resolved by Ultralytics."""
        path = Path(cfg)
        if path.is_file():
            d = yaml.safe_load(path.read_text()) or {}
            return isinstance(d, dict) and "anchors" not in d and _last_head_module(d) == "Detect"
        if not _CFG_NAME.match(path.name):
            return False
        try:
            d = checkpoint.import_ultralytics("nn.tasks").yaml_model_load(path)
        except (FileNotFoundError, OSError):
            return False
        return _last_head_module(d) == "Detect"

    def build(self, cfg: str | Path | dict, nc: int | None = None) -> LoadedModel:
        """Builds a random-init ``DetectionModel`` from a cfg (``yolov8n.yaml``, a path, or a dict)."""
        tasks = checkpoint.import_ultralytics("nn.tasks")
        model = tasks.DetectionModel(copy.deepcopy(cfg) if isinstance(cfg, dict) else str(cfg), nc=nc,
                                     verbose=False)
        if not self.matches(model):
            raise ValueError(f"cfg {cfg!r} does not build a detection model with a Detect head; the ultralytics "
                             "adapter handles detection cfgs such as yolov8n.yaml, yolo11n.yaml, yolo26n.yaml")
        return checkpoint.to_loaded(model.float().eval(), source=None, meta={})

    def load(self, path: str | Path, *, trust: bool = False, cfg: str | Path | None = None) -> LoadedModel:
        """Loads a ``.pt`` written by Ultralytics (training, ``YOLO.save``) or by ``save`` here.

        Without ``trust`` only Ultralytics/torch module classes may be unpickled (Ultralytics'
        ``weights_only`` allow-list). ``cfg`` is not needed: the file holds the whole model.
        """
        return checkpoint.load_checkpoint(path, trust=trust)

    # -- pruning ----------------------------------------------------------------------
    def ignored_layers(self, model: nn.Module) -> list[nn.Module]:
        """The last box and class conv of every head branch, the DFL, and the attention convs."""
        blocks = checkpoint.blocks_module()
        return blocks.head_output_convs(model.model[-1]) + blocks.attention_layers(model)

    def prepare_for_pruning(self, model: nn.Module) -> nn.Module:
        """Rewrites split blocks into split-free stock blocks (identical outputs); refuses what it cannot prune."""
        if not self.matches(model):
            raise TypeError(f"the ultralytics adapter cannot prune a {type(model).__name__}; it handles Ultralytics "
                            "DetectionModel instances with a Detect head")
        blocks = checkpoint.blocks_module()
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
        checkpoint.blocks_module().reset_head_caches(head)
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
        ul_loss = checkpoint.import_ultralytics("utils.loss")
        args = dict(checkpoint.import_ultralytics("cfg").DEFAULT_CFG_DICT)
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
        """A fresh last conv of every class branch (``cv3``; ``one2one_cv3`` of end-to-end heads).

        Biased as Ultralytics' ``Detect.bias_init``; the box branches and pruned widths stay.
        """
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
            checkpoint.blocks_module().reset_head_caches(head)
        model.names = dict(enumerate(str(n) for n in names))
        return model

    def finetune(self, loaded: LoadedModel, data: str | Path, *, out_dir: str | Path,
                 **settings: Any) -> FinetuneResult:
        """Fine-tunes through Ultralytics' own trainer (``trainer.PrunedDetectionTrainer``) into ``out_dir``.

        ``settings`` are the engine's names; those that trainer has (``_TRAINER_SETTINGS``) are
        passed on, any other one set is refused (e.g. ``hyp``, ``teacher``, ``callbacks``).
        """
        from yolo_prune.engine.finetune import FinetuneResult

        unsupported = sorted(k for k, v in settings.items() if v not in (None, False) and k not in _TRAINER_SETTINGS)
        if unsupported:
            raise ValueError(f"the {self.name} family fine-tunes with its own trainer, which does not take "
                             f"{', '.join(unsupported)}; drop them or use that trainer's options directly")
        renamed = {_TRAINER_SETTINGS[k]: v for k, v in settings.items()
                   if v is not None and _TRAINER_SETTINGS.get(k) is not None}
        checkpoint.import_ultralytics()
        from yolo_prune.adapters.ultralytics.trainer import finetune

        out_dir = Path(out_dir)
        with run_lock(out_dir):  # one writer per run folder, as the generic engine
            tuned = finetune(loaded, data, project=out_dir.parent, name=out_dir.name, **renamed)
        run_dir = Path(tuned.meta.get("run_dir", out_dir))
        return FinetuneResult(out_dir=run_dir, last=run_dir / "weights" / "last.pt", best=run_dir / "weights" / "best.pt",
                              best_fitness=None, epochs=int(settings.get("epochs") or 0),
                              row=dict(tuned.meta.get("metrics", {})), model=tuned.model)

    def load_training_checkpoint(self, path: str | Path, *, trust: bool = False) -> tuple[LoadedModel, dict]:
        """A ``last.pt`` the generic engine wrote through ``save``, under Ultralytics' allow-list."""
        ckpt = checkpoint.read_checkpoint(path, trust=trust)
        model = ckpt.get("model")
        if not isinstance(model, nn.Module) or not self.matches(model):
            raise CheckpointError(f"{path} is not a training checkpoint (no pickled Ultralytics DetectionModel "
                                  f"under 'model'); pass the run's weights/last.pt")
        loaded = checkpoint.to_loaded(model.float(), source=Path(path), meta=dict(ckpt.get("yolo_prune") or {}))
        return loaded, ckpt

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
            rebuilt = checkpoint.import_ultralytics("nn.tasks").DetectionModel(copy.deepcopy(cfg), nc=model.model[-1].nc, verbose=False)
        want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
        first = next((k for k in sorted(want.keys() | got.keys()) if want.get(k) != got.get(k)), None)
        if first is None:
            return CfgForm(copy.deepcopy(cfg))
        return CfgForm(None, "Ultralytics yamls give each block one width from which it derives its hidden widths, "
                             f"and the Detect head derives its own from its inputs (first difference: {first} "
                             f"{want.get(first, 'absent')} vs {got.get(first, 'absent')} from the yaml)")

    def own_trainer_hint(self, cfg_written: bool) -> str:
        """How Ultralytics' own ``YOLO.train`` keeps (or would lose) the pruned widths."""
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
        return checkpoint.save_checkpoint(loaded, path, extra=extra)


def _last_head_module(cfg: dict) -> str | None:
    head = cfg.get("head") or []
    return head[-1][2] if head and isinstance(head[-1], (list, tuple)) and len(head[-1]) > 2 else None


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


def _class_conv(old: nn.Conv2d, nc: int, stride: float) -> nn.Conv2d:
    """A new ``nc``-output 1x1 conv in place of ``old``, class bias log(5 / nc / (640 / stride)^2)."""
    new = nn.Conv2d(old.in_channels, nc, 1).to(old.weight)
    with torch.no_grad():
        new.bias.fill_(math.log(5 / nc / (640 / stride) ** 2))
    return new
