"""Official YOLOv7 (WongKinYiu/yolov7) checkpoints, through the compatible ``models`` package.

Pruning facts of this family:

* the head's output convs (``m``; ``m2`` for IAuxDetect) must keep ``na * (nc + 5)`` channels;
* ``ImplicitA.implicit`` / ``ImplicitM.implicit`` are bare ``[1, C, 1, 1]`` parameters whose
  channels follow the conv they feed / follow (dimension 1);
* after pruning, ``RepConv.in_channels``, ``ImplicitA/M.channel`` and each layer's ``np`` are
  recomputed from the tensors (``models.yolo.refresh_bookkeeping``).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from models import yolo
from models.common import ImplicitA, ImplicitM
from yolo_prune.adapters.base import ADAPTERS, CfgForm, DetectorAdapter, DistillFn, LoadedModel, LossFn
from yolo_prune.adapters.yolov7 import checkpoint as checkpoint_io
from yolo_prune.adapters.yolov7.cfg import pruned_cfg
from yolo_prune.io import CheckpointError

# save() arguments that may arrive in ``extra``; the rest become plain entries of the file's dict.
_SAVE_ARGS = ("epoch", "best_fitness", "training_results", "ema", "updates", "optimizer", "half")


@ADAPTERS.register("yolov7")
class YOLOv7Adapter(DetectorAdapter):
    """Adapter for ``models.yolo.Model`` (YOLOv7 tiny / P5 / P6 families, training and deploy cfgs)."""

    name = "yolov7"
    pickle_packages = ("models",)

    # -- identification / construction -------------------------------------------------
    def matches(self, model: nn.Module) -> bool:
        """A ``models.yolo.Model`` (also inside a DDP / DataParallel wrapper)."""
        return isinstance(_unwrap(model), yolo.Model)

    def load(self, path: str | Path, *, trust: bool = False, cfg: str | Path | None = None) -> LoadedModel:
        """An official-format checkpoint under the allow-list (``checkpoint.load_checkpoint``)."""
        return checkpoint_io.load_checkpoint(path, trust=trust, cfg=cfg)

    def owns_cfg(self, cfg: str | Path) -> bool:
        """A name/file in ``configs/models``, or a yaml with anchors and a YOLOv7 head."""
        try:
            path = yolo.find_cfg(cfg)
        except FileNotFoundError:
            return False
        if path.parent.parent == yolo.CFG_ROOT:
            return True
        try:
            with open(path) as f:
                d = yaml.safe_load(f)
            return isinstance(d, dict) and "anchors" in d and d["head"][-1][2] in ("Detect", "IDetect", "IAuxDetect")
        except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError):
            return False

    def build(self, cfg: str | Path | dict, nc: int | None = None, *, width_multiple: float | None = None,
              depth_multiple: float | None = None) -> LoadedModel:
        """Randomly initialised model from a cfg path, dict or family name (``'yolov7-tiny'``).

        ``width_multiple`` / ``depth_multiple`` override the cfg's (handy for tiny test models).
        """
        cfg_dict = yolo.load_cfg(cfg)
        if width_multiple is not None:
            cfg_dict["width_multiple"] = width_multiple
        if depth_multiple is not None:
            cfg_dict["depth_multiple"] = depth_multiple
        model = yolo.Model(cfg_dict, nc=nc).float().eval()
        return LoadedModel(model=model, family=self.name, names=list(model.names),
                           stride=[int(s) for s in model.stride.tolist()], cfg=model.yaml,
                           source=Path(cfg) if isinstance(cfg, (str, Path)) else None)

    def example_model(self, nc: int = 3) -> LoadedModel:
        """yolov7-tiny (ELAN blocks, IDetect with implicit layers) at width 0.125."""
        return self.build("yolov7-tiny", nc=nc, width_multiple=0.125)

    # -- pruning ----------------------------------------------------------------------
    def ignored_layers(self, model: nn.Module) -> list[nn.Module]:
        """The head's output convs (``m``; ``m2`` too for ``IAuxDetect``)."""
        head = _head(model)
        layers = list(head.m)
        if isinstance(head, yolo.IAuxDetect):
            layers += list(head.m2)
        return layers

    def unwrapped_parameters(self, model: nn.Module) -> list[tuple[nn.Parameter, int]]:
        """Every ``ImplicitA`` / ``ImplicitM`` parameter, channels on dimension 1."""
        return [(m.implicit, 1) for m in _unwrap(model).modules() if isinstance(m, (ImplicitA, ImplicitM))]

    def prepare_for_pruning(self, model: nn.Module) -> nn.Module:
        """Nothing to rewrite: every YOLOv7 block traces as is. Clears cached grids."""
        yolo.refresh_bookkeeping(_unwrap(model))
        return model

    def finish_pruning(self, model: nn.Module) -> nn.Module:
        """Recomputes channel bookkeeping from the pruned tensors."""
        yolo.refresh_bookkeeping(_unwrap(model))
        return model

    # -- inference --------------------------------------------------------------------
    def decode(self, output: Any) -> torch.Tensor:
        """Eval output ``(pred, maps)`` -> ``pred [B, N, 5 + nc]`` (a bare tensor passes through)."""
        return output if isinstance(output, torch.Tensor) else output[0]

    def fuse(self, model: nn.Module) -> nn.Module:
        """Folds Conv+BN, RepConv branches and implicit terms in place; returns the model in eval mode."""
        return _unwrap(model).fuse().eval()

    # -- training ---------------------------------------------------------------------
    def set_classes(self, model: nn.Module, names: list[str]) -> nn.Module:
        """New class rows in each head output conv (``na * (5 + nc)`` rows per level).

        For every anchor the 5 box + objectness rows are kept, the class rows initialised as a fresh head's;
        ``ImplicitM`` scales follow (class entries 1.0).
        """
        net, nc = _unwrap(model), len(names)
        head = _head(net)
        if nc < 1:
            raise ValueError("a detector needs at least one class; the data names none")
        if nc != head.nc:
            _resize_class_outputs(head, nc)
            net.nc, net.class_weights = nc, torch.ones(nc)
            net.yaml = {**net.yaml, "nc": nc}
            yolo.refresh_bookkeeping(net)
        net.names = [str(n) for n in names]
        return model

    def loss(self, model: nn.Module, hyp: dict) -> LossFn:
        """YOLOv7 training loss (plain / OTA / aux OTA, see ``yolo_prune.adapters.yolov7.loss``)."""
        from yolo_prune.adapters.yolov7.loss import build_yolov7_loss

        return build_yolov7_loss(model, hyp)

    # -- the family's own tools -------------------------------------------------------
    def cfg_form(self, model: nn.Module) -> CfgForm:
        """The YOLOv7 cfg with the pruned widths (``yolov7.cfg.pruned_cfg``), or why there is none."""
        return pruned_cfg(_unwrap(model))

    def own_trainer_hint(self, cfg_written: bool) -> str:
        """How the official ``train.py`` keeps (or would lose) the pruned widths."""
        if cfg_written:
            return ("the official train.py keeps the pruned widths: --weights pruned.pt --cfg '' (it reads "
                    "model.yaml) or --cfg with the .yaml written beside the checkpoint")
        return ("the official train.py --weights would rebuild the unpruned model from model.yaml and keep only "
                "the tensors that fit; fine-tune it with yolo-prune finetune instead")

    def distill_loss(self, student: nn.Module, teacher: nn.Module, hyp: dict, *, weight: float = 1.0,
                     classes: bool = True) -> DistillFn:
        """Output distillation over the lead head's maps (``yolo_prune.adapters.yolov7.distill``).

        Boxes and objectness only when ``classes`` is False (a teacher with other classes).
        """
        from yolo_prune.adapters.yolov7.distill import build_distill_loss

        return build_distill_loss(student, teacher, hyp, weight=weight, classes=classes)

    def load_training_checkpoint(self, path: str | Path, *, trust: bool = False) -> tuple[LoadedModel, dict]:
        """A ``last.pt`` under the official allow-list: its float32 ``model`` and the whole dict."""
        ckpt = checkpoint_io.read_checkpoint(path, trust=trust)
        if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), yolo.Model):
            raise CheckpointError(f"{path} is not a training checkpoint (no pickled YOLOv7 model); pass the run's "
                                  f"weights/last.pt")
        model = ckpt["model"].float()
        meta = {k: v for k, v in ckpt.items() if k not in checkpoint_io.OFFICIAL_KEYS}
        loaded = LoadedModel(model=model, family=self.name, names=checkpoint_io.model_names(model),
                             stride=checkpoint_io.model_stride(model), cfg=getattr(model, "yaml", None),
                             source=Path(path), meta=meta)
        return loaded, ckpt

    # -- saving -----------------------------------------------------------------------
    def save(self, loaded: LoadedModel, path: str | Path, *, extra: dict | None = None) -> Path:
        """Official checkpoint dict; known ``extra`` keys are save arguments, others plain entries.

        ``loaded.meta['pruning']`` (if any) is stored as a ``'pruning'`` entry. The saved model's
        ``yaml`` is the cfg that rebuilds it (pruned widths included) when there is one.
        """
        extra = dict(extra or {})
        kwargs = {k: extra.pop(k) for k in _SAVE_ARGS if k in extra}
        if "pruning" in loaded.meta and "pruning" not in extra:
            extra["pruning"] = checkpoint_io.plain_extra(loaded.meta["pruning"])
        form = self.cfg_form(loaded.model)
        return checkpoint_io.save_checkpoint(loaded.model, path, names=loaded.names, extra=extra or None,
                                             cfg=form.cfg, **kwargs)


def _resize_class_outputs(head: nn.Module, nc: int) -> None:
    """Rebuilds ``head.m`` (and ``m2``, ``im``) for ``nc`` classes, keeping each anchor's box + objectness rows."""
    na, old_no, new_no = head.na, head.no, nc + 5
    kept = torch.tensor([a * old_no + k for a in range(na) for k in range(5)])
    placed = torch.tensor([a * new_no + k for a in range(na) for k in range(5)])
    class_prior = math.log(0.6 / (nc - 0.99))  # Model._initialize_biases' class term
    for convs in (head.m, getattr(head, "m2", ())):
        for i, old in enumerate(convs):
            new = nn.Conv2d(old.in_channels, na * new_no, 1).to(old.weight)
            with torch.no_grad():
                new.bias.view(na, new_no)[:, 5:] += class_prior
                new.weight[placed] = old.weight[kept]
                new.bias[placed] = old.bias[kept]
            convs[i] = new
    for im in getattr(head, "im", ()):
        scale = torch.ones(1, na * new_no, 1, 1).to(im.implicit)
        scale[:, placed] = im.implicit.detach()[:, kept]
        im.implicit = nn.Parameter(scale)
    head.nc, head.no = nc, new_no


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP / DataParallel wrapper, or the model itself."""
    return model.module if isinstance(getattr(model, "module", None), nn.Module) else model


def _head(model: nn.Module) -> nn.Module:
    head = _unwrap(model).model[-1]
    if not isinstance(head, yolo.HEADS):
        raise TypeError(f"the last layer of this YOLOv7 model is {type(head).__name__}, not a detection head")
    return head
