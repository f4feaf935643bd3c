"""Shared pytest fixtures: tiny YOLOv7 models built from the project's cfgs, shared checkpoints.

Models are small (width 0.125-0.25) so that building and running them on a shared CPU is cheap.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest
import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_YOLOV7_CHECKPOINTS = REPO_ROOT.parent / "shared" / "checkpoints" / "yolov7"
# Tests run tiny models, where intra-op threads only add synchronisation cost; on a shared CPU
# the spin-waiting of extra threads made the suite ~20x slower. Override with the variable.
torch.set_num_threads(int(os.environ.get("YOLO_PRUNE_TEST_THREADS", "1")))

YOLOV7_FAMILIES = ("yolov7-tiny", "yolov7", "yolov7x", "yolov7-w6", "yolov7-e6", "yolov7-d6", "yolov7-e6e")


def build_yolov7(cfg: str = "yolov7-tiny", *, width: float = 0.25, nc: int | None = None, kind: str = "training",
                 seed: int = 0) -> nn.Module:
    """A randomly initialised ``models.yolo.Model`` in eval mode, deterministic per ``seed``.

    Args:
        cfg: Family name in ``configs/models/<kind>`` (``'yolov7-tiny'``) or a cfg path.
        width: ``width_multiple`` override (channels are rounded up to multiples of 8).
        nc: Number of classes (default: the cfg's 80).
        kind: ``'training'`` or ``'deploy'`` when ``cfg`` is a family name.
        seed: Seeds the random initialisation.
    """
    from models.yolo import CFG_ROOT, Model, load_cfg

    path = CFG_ROOT / kind / f"{cfg}.yaml" if cfg in YOLOV7_FAMILIES else cfg
    cfg_dict = load_cfg(path)
    cfg_dict["width_multiple"] = width
    torch.manual_seed(seed)
    return Model(cfg_dict, nc=nc).eval()


def randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial batch-norm statistics and affine terms, so folding errors show."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
    return model


@pytest.fixture()
def yolov7_builder() -> Callable[..., nn.Module]:
    """``build_yolov7`` as a fixture: ``yolov7_builder('yolov7', width=0.125, nc=3)``."""
    return build_yolov7


@pytest.fixture()
def tiny_yolov7() -> nn.Module:
    """yolov7-tiny (training cfg, IDetect head) at width 0.25, 80 classes, eval mode; fresh per test."""
    return build_yolov7("yolov7-tiny", width=0.25)


@pytest.fixture(scope="session")
def yolov7_checkpoints_dir() -> Path:
    """``../shared/checkpoints/yolov7``: official-format files with random weights (skips if absent)."""
    if not SHARED_YOLOV7_CHECKPOINTS.is_dir():
        pytest.skip(f"shared YOLOv7 checkpoints not found at {SHARED_YOLOV7_CHECKPOINTS}")
    return SHARED_YOLOV7_CHECKPOINTS
