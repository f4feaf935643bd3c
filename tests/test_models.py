"""The YOLOv7-compatible ``models`` package and the YOLOv7 adapter (no checkpoint files here).

Every cfg (training and deploy) is built at width 0.125 and run on 64 px inputs: output
shapes follow docs/CONTRACTS.md, nothing is NaN, every parameter gets a gradient, and the
fused model matches the unfused one.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch_pruning as tp
from conftest import YOLOV7_FAMILIES, build_yolov7, randomise_bn
from torch import nn

from models.common import Conv, ImplicitA, ImplicitM, RepConv
from models.yolo import CFG_ROOT, IAuxDetect, IDetect, Model, load_cfg
from yolo_prune.adapters import get_adapter

IMG = 64
CFGS = [(kind, fam) for kind in ("training", "deploy") for fam in YOLOV7_FAMILIES]


def _cfg_id(case: tuple[str, str]) -> str:
    return f"{case[1]}-{case[0]}"


def _run(model: nn.Module, x: torch.Tensor):
    with torch.no_grad():
        return model(x)


def _expected_boxes(head, img: int) -> int:
    return sum(head.na * (img // int(s)) ** 2 for s in head.stride)


def test_all_fourteen_cfgs_exist():
    found = sorted(f"{p.parent.name}/{p.stem}" for p in CFG_ROOT.glob("*/*.yaml"))
    assert found == sorted(f"{kind}/{fam}" for kind, fam in CFGS)


@pytest.mark.parametrize("case", CFGS, ids=_cfg_id)
def test_cfg_builds_and_runs_per_contract(case):
    kind, family = case
    model = build_yolov7(family, width=0.125, nc=3, kind=kind)
    head = model.model[-1]
    assert head.nc == 3 and head.no == 8 and model.nc == 3 and len(model.names) == 3
    assert head.stride.tolist() == ([8, 16, 32] if head.nl == 3 else [8, 16, 32, 64])
    assert torch.equal(model.stride, head.stride)
    assert all(layer.np == sum(p.numel() for p in layer.parameters()) for layer in model.model)
    x = torch.rand(2, 3, IMG, IMG)

    pred, maps = _run(model, x)
    assert pred.shape == (2, _expected_boxes(head, IMG), 8)
    assert len(maps) == head.nl
    assert torch.isfinite(pred).all()
    assert ((pred[..., 4:] >= 0) & (pred[..., 4:] <= 1)).all() and (pred[..., 2:4] > 0).all()

    model.train()
    outs = model(x)
    n_maps = 2 * head.nl if isinstance(head, IAuxDetect) else head.nl
    assert len(outs) == n_maps
    for out, s in zip(outs, list(head.stride) * 2, strict=False):
        assert out.shape == (2, head.na, IMG // int(s), IMG // int(s), 8)
        assert torch.isfinite(out).all()
    sum(o.float().mean() for o in outs).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"


# Parameter counts of the fused full-size models as published in the YOLOv7 paper (millions).
# (The paper's 154.7 M for D6 is the training-form count; its fused deploy form has 133.8 M.)
PAPER_PARAMS_M = {"yolov7-tiny": 6.2, "yolov7": 36.9, "yolov7x": 71.3, "yolov7-w6": 70.4, "yolov7-e6": 97.2,
                  "yolov7-e6e": 151.7}


@pytest.mark.slow
def test_full_size_deploy_cfgs_have_the_published_sizes():
    for family in YOLOV7_FAMILIES:
        model = Model(CFG_ROOT / "deploy" / f"{family}.yaml").fuse().eval()
        params_m = sum(p.numel() for p in model.parameters()) / 1e6
        if family in PAPER_PARAMS_M:
            assert round(params_m, 1) == PAPER_PARAMS_M[family], family
        pred = _run(model, torch.rand(1, 3, IMG, IMG))[0]
        assert pred.shape == (1, _expected_boxes(model.model[-1], IMG), 85) and torch.isfinite(pred).all()
        del model


@pytest.mark.parametrize("case", [("training", "yolov7"), ("training", "yolov7-tiny"), ("training", "yolov7-w6"),
                                  ("deploy", "yolov7"), ("deploy", "yolov7-e6e")], ids=_cfg_id)
def test_fuse_matches_unfused(case):
    kind, family = case
    model = randomise_bn(build_yolov7(family, width=0.125, kind=kind))
    x = torch.rand(1, 3, IMG, IMG)
    expected = _run(model, x)
    fused = copy.deepcopy(model).fuse().eval()
    got = _run(fused, x)
    torch.testing.assert_close(got[0], expected[0], rtol=1e-4, atol=1e-4)
    for g, e in zip(got[1], expected[1], strict=False):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert all(hasattr(m, "rbr_reparam") for m in fused.modules() if isinstance(m, RepConv))
    torch.testing.assert_close(_run(fused.fuse(), x)[0], expected[0], rtol=1e-4, atol=1e-4)  # idempotent


def test_fused_layers_use_official_method_names(tiny_yolov7):
    fused = tiny_yolov7.fuse()
    conv = fused.model[0]
    assert isinstance(conv, Conv) and not hasattr(conv, "bn") and conv.forward == conv.fuseforward
    head = fused.model[-1]
    assert isinstance(head, IDetect) and head.forward == head.fuseforward


def test_refusing_a_fused_head_is_harmless(tiny_yolov7):
    """The official loader fuses every file again; folding the implicits twice must change nothing."""
    x = torch.rand(1, 3, IMG, IMG)
    head = tiny_yolov7.fuse().model[-1]
    expected = _run(tiny_yolov7, x)[0]
    del head.forward  # what the official IDetect.fuse does not check before folding
    head.fuse()
    torch.testing.assert_close(_run(tiny_yolov7, x)[0], expected, rtol=1e-5, atol=1e-5)
    del head.forward
    torch.testing.assert_close(_run(tiny_yolov7, x)[0], expected, rtol=1e-5, atol=1e-5)  # unfused path too


def _prune_channels(model: Model, ratio: float = 0.5) -> Model:
    """Channel pruning with torch-pruning directly, using the adapter's family knowledge."""
    adapter = get_adapter("yolov7")
    adapter.prepare_for_pruning(model)
    pruner = tp.pruner.MagnitudePruner(
        model, torch.rand(1, 3, IMG, IMG), importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=ratio, ignored_layers=adapter.ignored_layers(model),
        unwrapped_parameters=adapter.unwrapped_parameters(model))
    pruner.step()
    return adapter.finish_pruning(model)


def test_bookkeeping_follows_pruned_tensors_and_fuse_still_exact():
    model = randomise_bn(build_yolov7("yolov7", width=0.25))
    params_before = sum(p.numel() for p in model.parameters())
    _prune_channels(model)
    assert sum(p.numel() for p in model.parameters()) < params_before
    repconvs = [m for m in model.modules() if isinstance(m, RepConv)]
    implicits = [m for m in model.modules() if isinstance(m, (ImplicitA, ImplicitM))]
    assert repconvs and implicits
    for m in repconvs:
        assert (m.in_channels, m.out_channels) == (m.rbr_dense[0].in_channels, m.rbr_dense[0].out_channels)
    assert all(m.channel == m.implicit.shape[1] for m in implicits)
    assert all(layer.np == sum(p.numel() for p in layer.parameters()) for layer in model.model)
    head = model.model[-1]
    assert all(conv.out_channels == head.na * head.no for conv in head.m)

    x = torch.rand(1, 3, IMG, IMG)
    expected = _run(model, x)
    assert expected[0].shape == (1, _expected_boxes(head, IMG), head.no)
    torch.testing.assert_close(_run(copy.deepcopy(model).fuse(), x)[0], expected[0], rtol=1e-4, atol=1e-4)


def test_fuse_reads_tensors_not_stale_attributes():
    model = randomise_bn(build_yolov7("yolov7", width=0.125))
    for m in model.modules():
        if isinstance(m, RepConv):
            m.in_channels, m.out_channels = 1, 1  # what an un-refreshed pruned model could carry
    x = torch.rand(1, 3, IMG, IMG)
    expected = _run(model, x)[0]
    torch.testing.assert_close(_run(model.fuse(), x)[0], expected, rtol=1e-4, atol=1e-4)


def test_half_then_float_keeps_stride_anchors_and_outputs(tiny_yolov7):
    x = torch.rand(1, 3, IMG, IMG)
    expected = _run(tiny_yolov7, x)[0]
    head = tiny_yolov7.model[-1]
    anchors = head.anchors.clone()
    model = tiny_yolov7.half().float()
    assert model.model[-1].anchors.dtype == torch.float32
    torch.testing.assert_close(model.model[-1].anchors, anchors, rtol=1e-3, atol=1e-3)
    assert model.stride.tolist() == [8, 16, 32] and model.model[-1].stride.tolist() == [8, 16, 32]
    torch.testing.assert_close(_run(model, x)[0], expected, rtol=1e-2, atol=0.5)


def test_test_time_augmentation_returns_three_scales(tiny_yolov7):
    pred, maps = _run(tiny_yolov7, torch.rand(1, 3, 128, 128))
    aug, none = tiny_yolov7(torch.rand(1, 3, 128, 128), augment=True)
    assert none is None and aug.shape[-1] == pred.shape[-1] and aug.shape[1] > 1.5 * pred.shape[1]
    assert torch.isfinite(aug).all()


def test_anchors_in_stride_units_and_anchor_grid_in_pixels(tiny_yolov7):
    head = tiny_yolov7.model[-1]
    cfg_anchors = torch.tensor(tiny_yolov7.yaml["anchors"], dtype=torch.float32).view(head.nl, -1, 2)
    torch.testing.assert_close(head.anchors * head.stride.view(-1, 1, 1), cfg_anchors)
    torch.testing.assert_close(head.anchor_grid.view(head.nl, -1, 2), cfg_anchors)


def test_cfg_dict_is_not_mutated_and_nc_override():
    cfg = load_cfg("yolov7-tiny")
    cfg["width_multiple"] = 0.125
    snapshot = copy.deepcopy(cfg)
    model = Model(cfg, nc=5)
    assert cfg == snapshot
    assert model.yaml["nc"] == 5 and model.model[-1].m[0].out_channels == 3 * 10


def test_unknown_cfg_module_names_the_closest_match():
    cfg = load_cfg("yolov7-tiny")
    cfg["backbone"][0][2] = "Cnv"
    with pytest.raises(ValueError, match="'Conv'"):
        Model(cfg)


def test_unknown_activation_is_refused_not_evaluated():
    cfg = load_cfg("yolov7-tiny")
    cfg["backbone"][0][3][-1] = "nn.Exec(__import__('os'))"
    with pytest.raises(ValueError, match="activation 'Exec'"):
        Model(cfg)


def test_unknown_cfg_name_lists_known_ones():
    with pytest.raises(FileNotFoundError, match="yolov7-tiny"):
        load_cfg("yolov7-tinny")
    assert load_cfg("deploy/yolov7-tiny")["head"][-1][2] == "Detect"
    assert load_cfg("yolov7-tiny.yaml")["head"][-1][2] == "IDetect"


# -- adapter --------------------------------------------------------------------------------------
def test_adapter_builds_by_family_name_with_overrides():
    adapter = get_adapter("yolov7")
    loaded = adapter.build("yolov7-tiny", nc=2, width_multiple=0.125)
    assert isinstance(loaded.model, Model) and not loaded.model.training
    assert loaded.family == "yolov7" and loaded.nc == 2 and loaded.stride == [8, 16, 32]
    assert loaded.cfg["width_multiple"] == 0.125 and loaded.cfg["nc"] == 2
    assert adapter.matches(loaded.model) and not adapter.matches(nn.Conv2d(3, 3, 1))
    assert adapter.owns_cfg("yolov7-e6e") and adapter.owns_cfg(CFG_ROOT / "deploy" / "yolov7.yaml")
    assert not adapter.owns_cfg("yolov8n.yaml")


def test_adapter_pruning_knowledge():
    adapter = get_adapter("yolov7")
    aux = build_yolov7("yolov7-w6", width=0.125)
    head = aux.model[-1]
    assert adapter.ignored_layers(aux) == list(head.m) + list(head.m2)
    unwrapped = adapter.unwrapped_parameters(aux)
    assert len(unwrapped) == 2 * head.nl and all(dim == 1 for _, dim in unwrapped)
    assert {id(p) for p, _ in unwrapped} == {id(m.implicit) for m in list(head.ia) + list(head.im)}
    deploy = build_yolov7("yolov7-tiny", width=0.125, kind="deploy")
    assert adapter.unwrapped_parameters(deploy) == []
    assert adapter.ignored_layers(deploy) == list(deploy.model[-1].m)


def test_adapter_decode_and_fuse(tiny_yolov7):
    adapter = get_adapter("yolov7")
    x = torch.rand(1, 3, IMG, IMG)
    output = _run(tiny_yolov7, x)
    pred = adapter.decode(output)
    assert pred is output[0] and pred.shape[-1] == 85
    randomise_bn(tiny_yolov7)
    expected = _run(tiny_yolov7, x)[0]
    fused = adapter.fuse(copy.deepcopy(tiny_yolov7))
    torch.testing.assert_close(adapter.decode(_run(fused, x)), expected, rtol=1e-4, atol=1e-4)


def test_models_find_the_same_cfgs_as_the_library():
    # a wheel ships configs/ inside yolo_prune/; models must look where yolo_prune.paths looks
    from models import yolo
    from yolo_prune.paths import MODEL_CFGS_DIR

    assert yolo.CFG_ROOT == MODEL_CFGS_DIR and (yolo.CFG_ROOT / "training" / "yolov7-tiny.yaml").is_file()
