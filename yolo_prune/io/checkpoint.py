"""What every family's checkpoint code shares: the loaded-model record and the refusal error.

A family's own loader (``yolo_prune.adapters.<family>``) knows its file format and its
allow-list of pickled classes; these pieces are the same for all of them.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

TRUST_HINT = ("pass trust=True (CLI: --trust-checkpoint) only if you trust the file's source: "
              "it then runs whatever code the file contains")
_PICKLE_PROTOCOL_BYTE = 0x80  # first byte of a legacy (non-zip) torch.save file


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as asked; the message says what to do instead."""


@dataclass
class LoadedModel:
    """A float32 model plus what its checkpoint said about it.

    Attributes:
        model: The network (float32, eval mode when freshly loaded).
        family: Name of the adapter that loaded or built it (``yolo_prune.adapters.ADAPTERS``).
        names: Class names, index order.
        stride: Output strides of the head's levels.
        cfg: The model cfg the network was built from, when the family keeps one.
        source: The file (or cfg) it came from.
        meta: The file's other plain entries (epoch, best_fitness, pruning settings, ...).
    """

    model: nn.Module
    family: str
    names: list[str]
    stride: list[int]
    cfg: dict | None = None
    source: Path | None = None
    meta: dict = field(default_factory=dict)

    @property
    def nc(self) -> int:
        """Number of classes."""
        return len(self.names)

    def __repr__(self) -> str:
        params_m = sum(p.numel() for p in self.model.parameters()) / 1e6
        return (f"LoadedModel({self.family}, {self.nc} classes, {params_m:.2f} M params, stride {self.stride}, "
                f"source={self.source})")


def check_readable(path: str | Path) -> Path:
    """``path`` as a ``Path`` when it is a file torch can read (zip or legacy format).

    Raises:
        CheckpointError: missing, a folder, or neither a zip archive nor a legacy pickle.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; check the --weights path")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} is not a file; pass the .pt file itself")
    if zipfile.is_zipfile(path):
        return path
    with open(path, "rb") as f:
        head = f.read(2)
    if len(head) == 2 and head[0] == _PICKLE_PROTOCOL_BYTE:  # legacy torch format: let torch try
        return path
    raise CheckpointError(f"{path} is not a torch checkpoint (no zip archive inside, {path.stat().st_size} bytes): "
                          f"it is truncated, corrupt or another kind of file; re-download or re-save it")
