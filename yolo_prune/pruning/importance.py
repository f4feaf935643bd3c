"""Channel importance criteria, registered by the names users type (``--importance``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch_pruning as tp

from yolo_prune.registry import Registry


@dataclass(frozen=True)
class ImportanceSpec:
    """How to build one criterion and whether it needs gradients (Taylor) before ranking."""

    build: Callable[[], tp.importance.Importance]
    needs_gradients: bool = False
    description: str = ""


IMPORTANCES: Registry[ImportanceSpec] = Registry("importance")


def _register(name: str, spec: ImportanceSpec) -> None:
    IMPORTANCES.register(name)(spec)


_register("l1", ImportanceSpec(lambda: tp.importance.GroupMagnitudeImportance(p=1),
                               description="group L1 norm of the coupled weights"))
_register("l2", ImportanceSpec(lambda: tp.importance.GroupMagnitudeImportance(p=2),
                               description="group L2 norm of the coupled weights"))
_register("random", ImportanceSpec(tp.importance.RandomImportance,
                                   description="random ranking (a baseline for comparisons)"))
_register("bn_scale", ImportanceSpec(tp.importance.BNScaleImportance,
                                     description="|gamma| of the BatchNorm layers (network slimming)"))
_register("taylor", ImportanceSpec(tp.importance.GroupTaylorImportance, needs_gradients=True,
                                   description="first-order Taylor |w * dL/dw| from a few batches"))
_register("lamp", ImportanceSpec(lambda: tp.importance.LAMPImportance(p=2),
                                 description="layer-adaptive magnitude (LAMP) scores"))
_register("fpgm", ImportanceSpec(lambda: tp.importance.FPGMImportance(p=2),
                                 description="geometric-median redundancy (FPGM)"))


def get_importance(name: str) -> ImportanceSpec:
    """Returns the registered criterion ``name``; a miss lists the known names."""
    return IMPORTANCES.get(name)
