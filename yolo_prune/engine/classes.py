"""Fitting a checkpoint's classes to a dataset's before fine-tuning.

The most common use of this toolkit: prune a released checkpoint (80 COCO classes), then
fine-tune it on one's own data (3 classes). Like the official trainers, the head's class
outputs are then rebuilt for the data (through ``adapter.set_classes``: pruned widths and
box / objectness weights kept). Equal class counts under other names are refused unless
the user asks to rename, because silently relabelling class 0 as something else would
train on top of the wrong classes.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # annotations only: the engine takes an adapter, it never imports the families
    from yolo_prune.adapters.base import DetectorAdapter, LoadedModel


def placeholder_names(nc: int) -> list[str]:
    """The names a model built without any get (``'0'``, ``'1'``, ...): they name nothing."""
    return [str(i) for i in range(nc)]


def same_classes(model_names: list[str], data_names: list[str]) -> bool:
    """True when a model with ``model_names`` predicts the classes ``data_names`` (placeholders match any names)."""
    model_names, data_names = [str(n) for n in model_names], [str(n) for n in data_names]
    return model_names == data_names or (len(model_names) == len(data_names)
                                         and model_names == placeholder_names(len(model_names)))


def fit_classes(loaded: LoadedModel, adapter: DetectorAdapter, names: list[str], *, rename: bool = False,
                what: str = "the model", seed: int = 0) -> str | None:
    """Makes ``loaded`` predict the data's ``names`` (in place); returns a note of what changed.

    Args:
        loaded: The model to fine-tune.
        adapter: Its family's adapter (``set_classes``).
        names: The data's class names, in class-index order.
        rename: With equal class counts, take the data's names for the model's classes.
        what: How messages name the model (``"the model"``, ``"--weights"``).
        seed: Seeds the new class outputs' initialisation (the caller's random stream is left
            as it was), so two runs of one job start from the same weights.

    Returns:
        None when the classes already match, else one sentence saying what was done.

    Raises:
        ValueError: equal counts under other names without ``rename``.
    """
    names = [str(n) for n in names]
    if loaded.names == names:
        return None
    if loaded.nc == len(names):
        if not rename and loaded.names != placeholder_names(loaded.nc):
            raise ValueError(
                f"{what} has {loaded.nc} classes like the data, but other names ({_show(loaded.names)} vs the data's "
                f"{_show(names)}); pass --rename-classes (rename_classes=True) to train its class outputs under the "
                f"data's names, or fix the data's names")
        adapter.set_classes(loaded.model, names)
        loaded.names = names
        return f"{what}'s {loaded.nc} classes now carry the data's names {_show(names)}"
    old = loaded.nc
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        adapter.set_classes(loaded.model, names)
    loaded.names = names
    return (f"{what} predicted {old} classes; its head now predicts the data's {len(names)} ({_show(names)}): box "
            f"and objectness weights kept, class outputs initialised afresh")


def _show(names: list[str], limit: int = 5) -> str:
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return "[" + ", ".join(names[:limit]) + more + "]"
