"""Unstructured (fine-grained) magnitude pruning: sparsity reached, shapes and MACs kept, masks permanent."""
from __future__ import annotations

import copy

import pytest
import torch
from _toy import ToyAdapter
from torch import nn

from yolo_prune.pruning.unstructured import (
    channel_ratio_for_sparsity,
    prunable_layers,
    sparsity_contrast,
    unstructured_prune,
)

IMG = 64


class ToyDetector(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.SiLU())
        self.a = nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.SiLU())
        self.b = nn.Sequential(nn.Conv2d(32, 32, 3, 1, 1), nn.BatchNorm2d(32), nn.SiLU())
        self.head = nn.Conv2d(32, 7, 1)

    def forward(self, x):
        x = self.a(self.stem(x))
        return self.head(x + self.b(x))




@pytest.fixture()
def toy() -> ToyDetector:
    torch.manual_seed(0)
    return ToyDetector().eval()


def _shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_reaches_the_asked_sparsity_and_keeps_shapes(toy, scope):
    shapes = _shapes(toy)
    head_weight = toy.head.weight.detach().clone()
    x = torch.rand(1, 3, IMG, IMG)
    out_shape = toy(x).shape
    report = unstructured_prune(toy, ToyAdapter(), 0.5, scope=scope, img_size=IMG)
    assert report["sparsity_achieved"] == pytest.approx(0.5, abs=1e-3)
    assert _shapes(toy) == shapes
    assert toy(x).shape == out_shape
    assert torch.equal(toy.head.weight, head_weight)  # the ignored head keeps every weight
    names = [row["name"] for row in report["layers"]]
    assert names == ["stem.0", "a.0", "b.0"]
    if scope == "layer":
        assert all(row["sparsity"] == pytest.approx(0.5, abs=0.01) for row in report["layers"])
    zeros = sum(int((m.weight == 0).sum()) for _, m in prunable_layers(toy, ToyAdapter()))
    assert zeros == sum(row["zeros"] for row in report["layers"])


def test_masks_are_permanent_and_survive_a_state_dict_round_trip(toy):
    unstructured_prune(toy, ToyAdapter(), 0.7, img_size=IMG)
    state = toy.state_dict()
    assert not any(k.endswith(("_orig", "_mask")) for k in state)
    assert not any(m._forward_pre_hooks for m in toy.modules())
    fresh = ToyDetector().eval()
    fresh.load_state_dict(state)  # a plain model of the same shapes loads it: nothing to re-apply
    x = torch.rand(1, 3, IMG, IMG)
    assert torch.equal(fresh(x), toy(x))
    assert int((fresh.b[0].weight == 0).sum()) == pytest.approx(0.7 * fresh.b[0].weight.numel(), abs=1)


def test_zeroed_weights_do_not_reduce_dense_macs(toy):
    before = unstructured_prune(copy.deepcopy(toy), ToyAdapter(), 0.0, img_size=IMG)
    after = unstructured_prune(toy, ToyAdapter(), 0.6, img_size=IMG)
    assert after["gmacs"] == before["gmacs"] and after["params_m"] == before["params_m"]
    assert after["nonzero_params_m"] < before["nonzero_params_m"]
    assert before["sparsity_achieved"] < 0.01


def test_latency_is_measured_before_and_after(toy):
    seen = []

    def fake_latency(model):
        seen.append(sum(int((p != 0).sum()) for p in model.parameters()))
        return float(len(seen))

    report = unstructured_prune(toy, ToyAdapter(), 0.5, img_size=IMG, latency_fn=fake_latency)
    assert (report["latency_ms_before"], report["latency_ms_after"]) == (1.0, 2.0)
    assert seen[0] > seen[1]  # the second call saw the pruned weights


def test_contrast_rows(toy):
    rows = sparsity_contrast(toy, ToyAdapter(), 0.5, img_size=IMG, latency_fn=lambda m: 1.0)
    dense, sparse, channel = rows
    assert sparse["gmacs"] == dense["gmacs"] and sparse["params_m"] == dense["params_m"]
    assert sparse["nonzero_params_m"] < dense["nonzero_params_m"]
    assert channel["gmacs"] < dense["gmacs"] and channel["params_m"] < dense["params_m"]
    assert channel_ratio_for_sparsity(0.75) == pytest.approx(0.5)


@pytest.mark.parametrize("kwargs, message", [(dict(sparsity=1.0), "sparsity must be in"),
                                             (dict(sparsity=0.5, scope="row"), "scope must be one of")])
def test_bad_settings(toy, kwargs, message):
    with pytest.raises(ValueError, match=message):
        unstructured_prune(toy, ToyAdapter(), img_size=IMG, **kwargs)
