"""The contract every detector family fulfils.

An adapter answers the family-specific questions the generic channel pruner, the
fine-tuning engine and the evaluator must not hard-code:

* which layers must keep their output channels (the detection head's output convs),
* which bare ``nn.Parameter`` objects carry channels and on which dimension
  (torch-pruning calls them ``unwrapped_parameters``),
* what must be rewritten before the dependency graph is traced and restored after,
* how raw model output becomes YOLOv7-style predictions for NMS,
* how to compute the training loss,
* how to save a checkpoint the family's own tools can load.

Adding a family is one new module with a subclass and ``@ADAPTERS.register(name)``.

Example:
    >>> @ADAPTERS.register("toy")
    ... class ToyAdapter(DetectorAdapter):
    ...     name = "toy"
    ...     def matches(self, model): return isinstance(model, ToyDetector)
    ...     def ignored_layers(self, model): return [model.head]
    ...     ...
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from yolo_prune.registry import Registry

ADAPTERS: "Registry[type[DetectorAdapter]]" = Registry("adapter")

# loss_fn(outputs, targets, imgs) -> (total_loss scaled by batch size, loss_items detached [k])
LossFn = Callable[[Any, torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]


@dataclass
class LoadedModel:
    """A float32 model plus what its checkpoint said about it."""

    model: nn.Module
    family: str
    names: list[str]
    stride: list[int]
    cfg: dict | None = None
    source: Path | None = None
    meta: dict = field(default_factory=dict)  # epoch, best_fitness, ... of the file

    @property
    def nc(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        params_m = sum(p.numel() for p in self.model.parameters()) / 1e6
        return (f"LoadedModel({self.family}, {self.nc} classes, {params_m:.2f} M params, stride {self.stride}, "
                f"source={self.source})")


@dataclass(frozen=True)
class CfgForm:
    """The family's own model cfg that rebuilds a model exactly, or why there is none (``cfg`` None)."""

    cfg: dict | None
    reason: str | None = None


class DetectorAdapter(abc.ABC):
    """Family-specific knowledge for pruning, training, evaluating and saving."""

    name: str = ""
    loss_names: tuple[str, ...] = ("box", "obj", "cls")
    # Top-level packages whose classes this family's checkpoints pickle (how files are recognised).
    pickle_packages: tuple[str, ...] = ()

    # -- identification / construction -------------------------------------------------
    @abc.abstractmethod
    def matches(self, model: nn.Module) -> bool:
        """True when ``model`` belongs to this family."""

    @abc.abstractmethod
    def load(self, path: str | Path, *, trust: bool = False, cfg: str | Path | None = None) -> LoadedModel:
        """Loads a checkpoint of this family as a float32 model (see ``yolo_prune.io``)."""

    def owns_cfg(self, cfg: str | Path) -> bool:
        """True when ``cfg`` (a path or a name such as ``yolov8n.yaml``) is a cfg of this family."""
        return False

    @abc.abstractmethod
    def build(self, cfg: str | Path | dict, nc: int | None = None) -> LoadedModel:
        """Builds a randomly initialised model from a model cfg (yaml path or dict)."""

    # -- pruning ----------------------------------------------------------------------
    @abc.abstractmethod
    def ignored_layers(self, model: nn.Module) -> list[nn.Module]:
        """Layers whose output channels must not be pruned (detection head outputs)."""

    def unwrapped_parameters(self, model: nn.Module) -> list[tuple[nn.Parameter, int]]:
        """Bare parameters carrying channels, each with the dimension that holds them."""
        return []

    def prepare_for_pruning(self, model: nn.Module) -> nn.Module:
        """Rewrites the model into a traceable, prunable form with identical outputs."""
        return model

    def output_shapes(self, output: Any) -> list[tuple[int, ...]]:
        """Shapes pruning must preserve, read off a forward's output (default: every tensor's).

        A family whose output also carries neck features (which pruning legitimately narrows)
        leaves those out here.
        """
        return [tuple(t.shape) for t in flatten_tensors(output)]

    def finish_pruning(self, model: nn.Module) -> nn.Module:
        """Restores whatever ``prepare_for_pruning`` changed and refreshes bookkeeping."""
        return model

    # -- inference --------------------------------------------------------------------
    @abc.abstractmethod
    def decode(self, output: Any) -> torch.Tensor:
        """Eval-mode output -> ``[B, N, 5 + nc]`` (cx, cy, w, h in input pixels, objectness,
        class probabilities), the layout ``yolo_prune.evaluation.non_max_suppression`` takes."""

    def fuse(self, model: nn.Module) -> nn.Module:
        """Returns an inference-equivalent fused model (Conv+BN folded, re-parameterised)."""
        return model

    # -- training ---------------------------------------------------------------------
    def set_classes(self, model: nn.Module, names: list[str]) -> nn.Module:
        """Makes ``model`` predict ``names`` (in place; returns it).

        With as many names as the model has classes only the names change. Otherwise the head's
        class outputs are rebuilt for ``len(names)`` classes, freshly initialised, while the
        pruned widths and the box (and objectness) weights stay, as the family's own trainer does
        when a dataset's class count differs from a checkpoint's.
        """
        raise NotImplementedError(f"the {self.name} family cannot change the classes of its models; fine-tune on "
                                  f"data with the model's classes")

    def loss(self, model: nn.Module, hyp: dict) -> LossFn:
        """Returns the family's training loss for ``model`` under hyper-parameters ``hyp``."""
        raise NotImplementedError(f"adapter {self.name!r} does not provide a training loss")

    def finetune(self, loaded: LoadedModel, data: str | Path, **settings: Any) -> LoadedModel:
        """Fine-tunes with the family's own trainer. Families that do not override this are
        fine-tuned by ``yolo_prune.engine`` through ``loss`` / ``decode`` / ``save``."""
        raise NotImplementedError(f"adapter {self.name!r} has no trainer of its own; use yolo_prune.engine")

    @property
    def has_own_trainer(self) -> bool:
        """True when ``finetune`` is overridden (e.g. Ultralytics' trainer drives the run)."""
        return type(self).finetune is not DetectorAdapter.finetune

    # -- the family's own tools -------------------------------------------------------
    def cfg_form(self, model: nn.Module) -> CfgForm:
        """The family's cfg that rebuilds ``model`` with its pruned widths, so the family's own
        trainer (which rebuilds models from cfgs) keeps them; or the reason there is none."""
        return CfgForm(None, f"the {self.name} family has no cfg form for pruned widths")

    def own_trainer_hint(self, cfg_written: bool) -> str:
        """One sentence for users of the family's own trainer: how to keep the pruned widths."""
        return "fine-tune it with yolo-prune finetune, which keeps the pruned widths"

    # -- saving -----------------------------------------------------------------------
    @abc.abstractmethod
    def save(self, loaded: LoadedModel, path: str | Path, *, extra: dict | None = None) -> Path:
        """Writes ``loaded.model`` atomically in the family's own checkpoint format."""


def flatten_tensors(obj: Any) -> list[torch.Tensor]:
    """Every tensor in a nested list / tuple / dict, in order."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in flatten_tensors(item)]
    if isinstance(obj, dict):
        return [t for item in obj.values() for t in flatten_tensors(item)]
    return []


def get_adapter(name: str) -> DetectorAdapter:
    """Instantiates the adapter registered as ``name`` (helpful error on a miss)."""
    return ADAPTERS.get(name)()


def adapter_for_model(model: nn.Module) -> DetectorAdapter:
    """Finds the adapter whose ``matches`` accepts ``model``."""
    for name in ADAPTERS:
        adapter = ADAPTERS.get(name)()
        if adapter.matches(model):
            return adapter
    raise TypeError(
        f"no adapter handles a model of type {type(model).__module__}.{type(model).__name__}; "
        f"known families: {', '.join(ADAPTERS.names())}. Add one in yolo_prune/adapters/."
    )
