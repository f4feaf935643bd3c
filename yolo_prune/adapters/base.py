"""The contract every detector family fulfils.

An adapter answers the family-specific questions the generic channel pruner, the
fine-tuning engine and the evaluator must not hard-code:

* which layers must keep their output channels (the detection head's output convs),
* which bare ``nn.Parameter`` objects carry channels and on which dimension
  (torch-pruning calls them ``unwrapped_parameters``),
* what must be rewritten before the dependency graph is traced and restored after,
* how raw model output becomes YOLOv7-style predictions for NMS,
* what is traced when the model is exported for a deployment runtime,
* how to compute the training loss and, when it can, a distillation term,
* how to read and save checkpoints the family's own tools can load (including the
  ``last.pt`` of an interrupted fine-tune, for resuming),
* how to fine-tune (the generic engine by default; a family with a trainer of its own overrides it).

Adding a family is one new package in ``yolo_prune/adapters/`` with a subclass, registered
with ``@ADAPTERS.register(name)`` and imported once in ``yolo_prune/adapters/__init__.py``.
The contract tests (``tests/test_contract.py``) then run it through pruning, saving and the
loss without further work.

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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

from yolo_prune.io import LoadedModel
from yolo_prune.registry import Registry

if TYPE_CHECKING:  # annotations only: the engine is imported where it is called
    from yolo_prune.engine.finetune import FinetuneResult

ADAPTERS: Registry[type[DetectorAdapter]] = Registry("adapter")

# loss_fn(outputs, targets, imgs) -> (total_loss scaled by batch size, loss_items detached [k])
LossFn = Callable[[Any, torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]
# distill_fn(student_outputs, teacher_outputs, imgs) -> (term scaled like the loss, item detached [1])
DistillFn = Callable[[Any, Any, torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]

__all__ = ["ADAPTERS", "CfgForm", "DetectorAdapter", "DistillFn", "LoadedModel", "LossFn", "adapter_for_model",
           "flatten_tensors", "get_adapter"]

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
        """Loads a checkpoint of this family as a float32 eval model (safe loading unless ``trust``)."""

    def owns_cfg(self, cfg: str | Path) -> bool:
        """True when ``cfg`` (a path or a name such as ``yolov8n.yaml``) is a cfg of this family."""
        return False

    @abc.abstractmethod
    def build(self, cfg: str | Path | dict, nc: int | None = None) -> LoadedModel:
        """Builds a randomly initialised model from a model cfg (yaml path or dict)."""

    def example_model(self, nc: int = 3) -> LoadedModel:
        """A tiny randomly initialised model of this family (narrow widths, 64-160 px inputs).

        The contract tests run every registered family through it, so it should contain the
        family's characteristic blocks (split blocks, implicit layers, attention ...).
        """
        raise NotImplementedError(f"adapter {self.name!r} has no example_model; add one so the contract tests "
                                  f"(tests/test_contract.py) can check it")

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
        """Eval-mode output -> ``[B, N, 5 + nc]`` predictions.

        The layout is cx, cy, w, h in input pixels, objectness, class probabilities: what
        ``yolo_prune.evaluation.non_max_suppression`` takes. A family without objectness puts 1.0 there.
        """

    def fuse(self, model: nn.Module) -> nn.Module:
        """Returns an inference-equivalent fused model (Conv+BN folded, re-parameterised)."""
        return model

    # -- deployment -------------------------------------------------------------------
    def export_module(self, model: nn.Module) -> nn.Module:
        """A module for tracing into a deployment graph: images -> one ``[B, N, 5 + nc]`` tensor.

        Called on a fused eval-mode copy. The default runs ``model`` and then ``decode``, so every
        exported graph has the layout NMS takes (``yolo_prune.evaluation.non_max_suppression``),
        whatever the family. Override when the family's forward must be told it is being traced.
        """
        return DecodedDetector(model, self.decode)

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

    def distill_loss(self, student: nn.Module, teacher: nn.Module, hyp: dict, *, weight: float = 1.0,
                     classes: bool = True) -> DistillFn:
        """A knowledge-distillation term from ``teacher`` (unpruned) into ``student`` (pruned).

        ``classes=False``: the teacher predicts other classes, distil boxes and objectness only.
        """
        raise NotImplementedError(f"the {self.name} family has no distillation loss; fine-tune without --teacher")

    def finetune(self, loaded: LoadedModel, data: str | Path, *, out_dir: str | Path,
                 **settings: Any) -> FinetuneResult:
        """Fine-tunes ``loaded`` on ``data`` into the run folder ``out_dir``.

        The default is the generic engine (``yolo_prune.engine.finetune``, which trains
        ``loaded`` in place); ``settings`` are its keyword arguments (``hyp``, ``teacher``,
        ``exist_ok``, ``callbacks``, ``record`` and ``TrainSettings`` fields). A family with a
        trainer of its own overrides this and refuses the settings that trainer cannot honour.
        """
        from yolo_prune.engine.finetune import finetune

        return finetune(loaded, self, data=data, out_dir=out_dir, **settings)

    def load_training_checkpoint(self, path: str | Path, *, trust: bool = False) -> tuple[LoadedModel, dict]:
        """Reads a ``last.pt`` written through ``save(..., extra=...)`` for resuming a fine-tune.

        Returns the raw (not the EMA) model as a ``LoadedModel`` (``meta``: the file's entries
        this toolkit added) and the whole checkpoint dict (``ema``, ``optimizer``, ``epoch``,
        ``updates``, ``training_results`` and the engine's plain entries). Safe loading
        (the family's allow-list) unless ``trust``.
        """
        raise NotImplementedError(f"adapter {self.name!r} cannot read training checkpoints, so its runs cannot be "
                                  f"resumed; start a new run with --weights")

    # -- the family's own tools -------------------------------------------------------
    def cfg_form(self, model: nn.Module) -> CfgForm:
        """The family's cfg that rebuilds ``model`` with its pruned widths, or why there is none.

        With it, the family's own trainer (which rebuilds models from cfgs) keeps the widths.
        """
        return CfgForm(None, f"the {self.name} family has no cfg form for pruned widths")

    def own_trainer_hint(self, cfg_written: bool) -> str:
        """One sentence for users of the family's own trainer: how to keep the pruned widths."""
        return "fine-tune it with yolo-prune finetune, which keeps the pruned widths"

    # -- saving -----------------------------------------------------------------------
    @abc.abstractmethod
    def save(self, loaded: LoadedModel, path: str | Path, *, extra: dict | None = None) -> Path:
        """Writes ``loaded.model`` atomically in the family's own checkpoint format.

        ``extra`` entries are stored in the file; the engine passes ``epoch``, ``best_fitness``,
        ``training_results``, ``ema``, ``updates``, ``optimizer``, ``half`` (False: keep float32
        for an exact resume) and its plain ``train_state``.
        """


class DecodedDetector(nn.Module):
    """``decode(model(images))``: a detector whose output is the ``[B, N, 5 + nc]`` layout."""

    def __init__(self, model: nn.Module, decode: Callable[[Any], torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self.decode = decode

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.model(images))


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
