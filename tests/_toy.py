"""A toy detector family for testing the generic pruning machinery without YOLO models.

Every test module's toy network exposes ``head`` (the output conv that must keep its
channels) and, optionally, ``implicit`` (a bare ``[1, C, 1, 1]`` parameter on dimension 1).
"""
from __future__ import annotations

from torch import nn

from yolo_prune.adapters.base import DetectorAdapter, LoadedModel


class ToyAdapter(DetectorAdapter):
    """Adapter for any toy network with a ``head`` conv (and an optional ``implicit``)."""

    name = "toy"

    def matches(self, model: nn.Module) -> bool:
        return isinstance(getattr(model, "head", None), nn.Conv2d)

    def load(self, path, *, trust=False, cfg=None):
        raise NotImplementedError("toy models are built in tests, never loaded")

    def build(self, cfg, nc=None):
        raise NotImplementedError("toy models are built in tests")

    def ignored_layers(self, model: nn.Module) -> list[nn.Module]:
        return [model.head]

    def unwrapped_parameters(self, model: nn.Module) -> list[tuple[nn.Parameter, int]]:
        return [(model.implicit, 1)] if hasattr(model, "implicit") else []

    def decode(self, output):
        return output

    def save(self, loaded: LoadedModel, path, *, extra=None):
        raise NotImplementedError("toy models are not saved")
