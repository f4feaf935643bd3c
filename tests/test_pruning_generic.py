"""The generic pruner on a toy detector: invariants that hold for every family."""
from __future__ import annotations

import copy

import pytest
import torch
from _toy import ToyAdapter
from torch import nn

from yolo_prune.pruning import IMPORTANCES, PruningError, prune_model


class ToyDetector(nn.Module):
    """conv-bn-act backbone, a residual add, a concat, an implicit-style bare parameter, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.SiLU())
        self.a = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.SiLU())
        self.b = nn.Sequential(nn.Conv2d(16, 24, 1), nn.BatchNorm2d(24), nn.SiLU())
        self.implicit = nn.Parameter(torch.randn(1, 40, 1, 1) * 0.02)
        self.head = nn.Conv2d(40, 7, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.a(x)
        x = torch.cat([x, self.b(x)], 1)
        return self.head(x + self.implicit)




@pytest.fixture()
def toy() -> ToyDetector:
    torch.manual_seed(0)
    return ToyDetector().eval()


def _run(model, x):
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("importance", [n for n in IMPORTANCES if n != "taylor"])
def test_half_ratio_shrinks_and_keeps_output_shape(toy, importance):
    x = torch.rand(1, 3, 64, 64)
    shape = _run(toy, x).shape
    result = prune_model(toy, ToyAdapter(), img_size=64, importance=importance, pruning_ratio=0.5)
    assert result.macs_after < result.macs_before
    assert result.params_after < result.params_before
    assert _run(result.model, x).shape == shape
    assert result.model.head.out_channels == 7  # ignored layer keeps its outputs
    # the bare parameter follows the channels of what it is added to
    assert result.model.implicit.shape[1] == result.model.head.in_channels < 40


def test_ratio_zero_changes_nothing(toy):
    x = torch.rand(1, 3, 64, 64)
    before = _run(toy, x)
    state = copy.deepcopy(toy.state_dict())
    result = prune_model(toy, ToyAdapter(), img_size=64, pruning_ratio=0.0)
    assert torch.equal(_run(result.model, x), before)
    assert all(torch.equal(v, state[k]) for k, v in result.model.state_dict().items())
    assert result.macs_after == result.macs_before


def test_dry_run_lists_groups_without_changing_the_model(toy):
    state = copy.deepcopy(toy.state_dict())
    result = prune_model(toy, ToyAdapter(), img_size=64, pruning_ratio=0.5, dry_run=True)
    assert result.dry_run and result.groups
    assert any(g.pruned > 0 and len(g.layers) >= 2 for g in result.groups)  # coupled layers reported
    assert all(torch.equal(v, state[k]) for k, v in toy.state_dict().items())


def test_same_settings_same_structure():
    shapes = []
    for _ in range(2):
        torch.manual_seed(0)
        model = ToyDetector().eval()
        result = prune_model(model, ToyAdapter(), img_size=64, importance="random", pruning_ratio=0.5, seed=3)
        shapes.append({k: tuple(v.shape) for k, v in result.model.state_dict().items()})
    assert shapes[0] == shapes[1]


def test_round_to_aligns_channels(toy):
    result = prune_model(toy, ToyAdapter(), img_size=64, pruning_ratio=0.4, round_to=8)
    assert result.model.b[0].out_channels % 8 == 0


def test_frozen_parameters_are_pruned_and_stay_frozen(toy):
    for p in toy.parameters():
        p.requires_grad_(False)
    result = prune_model(toy, ToyAdapter(), img_size=64, pruning_ratio=0.5)
    assert result.params_after < result.params_before
    assert not any(p.requires_grad for p in result.model.parameters())


def test_layer_ratio_patterns(toy):
    result = prune_model(toy, ToyAdapter(), img_size=64, pruning_ratio=0.0, layer_ratios={"b.*": 0.5})
    assert result.model.b[0].out_channels == 12
    assert result.model.stem[0].out_channels == 16


@pytest.mark.parametrize("kwargs, message", [
    (dict(pruning_ratio=1.0), "must be in [0, 1)"),
    (dict(pruning_ratio=-0.1), "must be in [0, 1)"),
    (dict(importance="l3"), "Did you mean"),
    (dict(layer_ratios={"nope*": 0.5}), "matches no prunable conv"),
    (dict(round_to=0), "round_to"),
])
def test_bad_settings_are_named(toy, kwargs, message):
    with pytest.raises((ValueError, KeyError), match=message.replace("[", r"\[").replace(")", r"\)")):
        prune_model(toy, ToyAdapter(), img_size=64, **kwargs)


def test_nothing_prunable_fails_loudly(toy):
    class IgnoreAll(ToyAdapter):
        def ignored_layers(self, model):
            return [model]

    with pytest.raises(PruningError, match="removed nothing"):
        prune_model(toy, IgnoreAll(), img_size=64, pruning_ratio=0.5)
