"""Sensitivity scan and ratio allocation on a toy detector (a proxy score instead of mAP)."""
from __future__ import annotations

import copy
import logging

import pytest
import torch
import torch_pruning as tp
from _toy import ToyAdapter
from torch import nn

from yolo_prune.pruning import prune_model
from yolo_prune.pruning.allocation import (
    Target,
    allocate,
    allocate_and_verify,
    target_from_reduction,
    uniform_ratio_for_target,
)
from yolo_prune.pruning.recipe import load_recipe, save_recipe
from yolo_prune.pruning.sensitivity import ScanPoint, SensitivityResult, SensitivityUnit, list_units, scan_sensitivity

IMG = 64


def cbs(c1: int, c2: int, s: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c1, c2, 3, s, 1, bias=False), nn.BatchNorm2d(c2), nn.SiLU())


class ToyDetector(nn.Module):
    """Strides 2 / 4 / 8, a residual add (coupled group), a concat, and a head that must keep its outputs."""

    def __init__(self, w: int = 16) -> None:
        super().__init__()
        self.stem, self.down1, self.block1 = cbs(3, w, 2), cbs(w, 2 * w, 2), cbs(2 * w, 2 * w)
        self.down2, self.branch, self.fuse = cbs(2 * w, 4 * w, 2), cbs(4 * w, 2 * w), cbs(6 * w, 4 * w)
        self.head = nn.Conv2d(4 * w, 7, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down1(self.stem(x))
        x = x + self.block1(x)
        y = self.down2(x)
        return self.head(self.fuse(torch.cat([y, self.branch(y)], 1)))




@pytest.fixture()
def toy() -> ToyDetector:
    torch.manual_seed(0)
    return ToyDetector().eval()


def fidelity_score(reference: nn.Module):
    """Score = 1 - relative output error against the unpruned model on fixed inputs (1.0 = intact)."""
    x = torch.rand(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = reference.eval()(x)

    def score(model: nn.Module) -> float:
        with torch.no_grad():
            out = model.eval()(x)
        return float(1 - (out - ref).norm() / ref.norm())

    return score


def macs_of(model: nn.Module) -> float:
    return tp.utils.count_ops_and_params(model.eval(), torch.zeros(1, 3, IMG, IMG))[0]


@pytest.fixture()
def scan(toy) -> SensitivityResult:
    return scan_sensitivity(toy, ToyAdapter(), fidelity_score(copy.deepcopy(toy)), ratios=(0.25, 0.5, 0.75),
                            img_size=IMG, progress=None)


def test_scan_returns_one_curve_per_group(toy, scan):
    groups = prune_model(copy.deepcopy(toy), ToyAdapter(), img_size=IMG, pruning_ratio=0.5, dry_run=True).groups
    assert sorted(u.name for u in scan.units) == sorted(g.root for g in groups if g.pruned > 0)
    assert scan.baseline["score"] == pytest.approx(1.0)
    for unit in scan.units:
        assert [p.ratio for p in unit.points] == [0.25, 0.5, 0.75]
        macs = [scan.baseline["macs"]] + [p.macs for p in unit.points]
        assert all(a > b for a, b in zip(macs, macs[1:], strict=False)), f"{unit.name}: MACs must fall with the ratio"
        assert all(p.score < 1.0 and p.pruned_channels > 0 for p in unit.points)


def test_scan_leaves_the_model_unchanged(toy):
    state = copy.deepcopy(toy.state_dict())
    scan_sensitivity(toy, ToyAdapter(), fidelity_score(copy.deepcopy(toy)), ratios=(0.5,), img_size=IMG, progress=None)
    assert all(torch.equal(v, state[k]) for k, v in toy.state_dict().items())


def test_stride_units_cover_every_group_once(toy):
    groups = list_units(toy, ToyAdapter(), "group", img_size=IMG)
    stages = list_units(toy, ToyAdapter(), "stride", img_size=IMG)
    assert [u.name for u in stages] == ["stride2", "stride4", "stride8"]
    roots = [p for u in stages for p in u.patterns]
    assert sorted(roots) == sorted(u.name for u in groups)
    assert sum(u.channels for u in stages) == sum(u.channels for u in groups)


def test_named_stages_and_a_glob_that_matches_nothing(toy):
    units = list_units(toy, ToyAdapter(), {"early": ["stem.*", "down1.*", "block1.*"], "late": "fuse.*"}, img_size=IMG)
    assert [u.name for u in units] == ["early", "late"]
    assert units[1].patterns == ["fuse.0"]
    with pytest.raises(ValueError, match="matches no pruning group root"):
        list_units(toy, ToyAdapter(), {"nothing": ["neck.*"]}, img_size=IMG)


def test_scan_files_round_trip(scan, tmp_path):
    paths = scan.save(tmp_path)
    assert paths["png"].stat().st_size > 1000
    lines = paths["csv"].read_text().splitlines()
    assert len(lines) == 1 + len(scan.units) * 4  # header + (baseline + 3 ratios) per unit
    assert SensitivityResult.load(paths["json"]).to_dict() == scan.to_dict()


def test_scan_rejects_bad_settings(toy):
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        scan_sensitivity(toy, ToyAdapter(), lambda m: 0.0, ratios=(0.0, 0.5), img_size=IMG, progress=None)
    with pytest.raises(ValueError, match="may not set"):
        scan_sensitivity(toy, ToyAdapter(), lambda m: 0.0, img_size=IMG, prune_settings={"pruning_ratio": 0.3},
                         progress=None)


@pytest.mark.parametrize("metric, reduction", [("gmacs", 2.0), ("params_m", 1.6)])
def test_allocation_meets_its_target_within_5_percent(toy, scan, tmp_path, metric, reduction):
    target = target_from_reduction(scan, metric, reduction)
    alloc = allocate_and_verify(scan, target, toy, ToyAdapter(), img_size=IMG)
    assert alloc.met, alloc.history
    # independent check: the recipe written to disk, applied by prune_model, lands on the target
    path = save_recipe(alloc.to_recipe(name="toy"), tmp_path / "toy.yaml")
    result = prune_model(copy.deepcopy(toy), ToyAdapter(), img_size=IMG, **load_recipe(path))
    value = result.gmacs_after if metric == "gmacs" else result.params_after / 1e6
    assert value == pytest.approx(target.value, rel=0.05)


def _unit(name: str, drops: list[float], savings: list[float], ratios=(0.25, 0.5, 0.75)) -> SensitivityUnit:
    """A hand-made curve: baseline score 1.0, baseline MACs 100 (so GMACs 100e-9 ... in MACs units)."""
    points = [ScanPoint(ratio=r, score=1.0 - d, macs=100.0 - s, params=1000) for r, d, s in zip(ratios, drops, savings, strict=True)]
    return SensitivityUnit(name=name, patterns=[f"{name}.conv"], channels=16, points=points)


def _toy_scan(*units: SensitivityUnit) -> SensitivityResult:
    return SensitivityResult(baseline={"score": 1.0, "macs": 100.0, "params": 1000, "latency_ms": None},
                             units=list(units))


def test_allocation_prunes_the_insensitive_unit_first():
    scan = _toy_scan(_unit("fragile", [0.2, 0.4, 0.6], [10, 20, 30]), _unit("robust", [0.01, 0.02, 0.03], [10, 20, 30]))
    alloc = allocate(scan, Target("gmacs", 80e-9), smoothness=0.0)
    assert alloc.unit_ratios == {"robust": 0.5}
    assert alloc.layer_ratios == {"robust.conv": 0.5}
    assert alloc.predicted_value == pytest.approx(80e-9)
    assert alloc.predicted_drop == pytest.approx(0.02)


def test_allocation_spreads_pruning_when_scores_are_flat():
    # an untrained model scores 0 everywhere: the smoothness term must keep units from being emptied
    scan = _toy_scan(_unit("a", [0, 0, 0], [10, 20, 30]), _unit("b", [0, 0, 0], [10, 20, 30]))
    alloc = allocate(scan, Target("gmacs", 60e-9))
    assert alloc.unit_ratios == {"a": 0.5, "b": 0.5}


def test_allocation_out_of_reach_says_what_to_do():
    scan = _toy_scan(_unit("a", [0.1, 0.2, 0.3], [10, 20, 30]))
    with pytest.raises(ValueError, match="Scan higher ratios"):
        allocate(scan, Target("gmacs", 50e-9))
    with pytest.raises(ValueError, match="nothing to prune"):
        allocate(scan, Target("gmacs", 120e-9))
    with pytest.raises(ValueError, match="no baseline latency_ms"):
        allocate(scan, Target("latency_ms", 5.0))
    with pytest.raises(ValueError, match="Did you mean 'gmacs'"):
        Target("gmac", 1.0)


def test_uniform_ratio_matches_the_same_target(toy, scan):
    target = target_from_reduction(scan, "gmacs", 2.0)
    ratio, value = uniform_ratio_for_target(toy, ToyAdapter(), target, img_size=IMG)
    assert 0.0 < ratio < 0.95
    assert target.met_by(value)
    result = prune_model(copy.deepcopy(toy), ToyAdapter(), img_size=IMG, pruning_ratio=ratio)
    assert result.gmacs_after == pytest.approx(value)


# -- the command line, end to end on a narrow yolov7-tiny and the synthetic set ------------------
def test_cli_scans_allocates_and_writes_a_recipe_that_meets_the_target(tmp_path):
    import yaml

    from yolo_prune import api
    from yolo_prune.cli import main
    from yolo_prune.data.synthetic import make_synthetic_dataset
    from yolo_prune.paths import MODEL_CFGS_DIR

    cfg = yaml.safe_load((MODEL_CFGS_DIR / "training" / "yolov7-tiny.yaml").read_text())
    cfg["width_multiple"] = 0.25
    cfg_path = tmp_path / "yolov7-tiny-w025.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    data = make_synthetic_dataset(tmp_path / "data", n_train=0, n_val=2, img_size=64, seed=0, profile="hard")
    out = tmp_path / "scan"
    args = ["sensitivity", "--cfg", str(cfg_path), "--data", str(data), "--max-images", "2", "--img", "64",
            "--ratios", "0.5", "--units", "stride", "--batch", "2", "--out", str(out)]
    assert main([*args, "--reduction", "1.5"]) == 0
    scan = SensitivityResult.load(out / "sensitivity.json")
    assert [u.name for u in scan.units] == ["stride2", "stride4", "stride8", "stride16", "stride32"]
    assert (out / "sensitivity.png").exists() and (out / "args.yaml").exists()
    recipe = load_recipe(out / "recipe.yaml")
    loaded = api.load(cfg=cfg_path, nc=len(yaml.safe_load(data.read_text())["names"]))
    result = prune_model(loaded.model, api.adapter_of(loaded), img_size=64, **recipe)
    assert result.gmacs_after == pytest.approx(scan.baseline["macs"] / 1e9 / 1.5, rel=0.05)
    # outputs are not overwritten without --force; --from-scan re-allocates without scanning
    assert main([*args, "--reduction", "1.5"]) == 2
    assert main([*args, "--from-scan", str(out / "sensitivity.json"), "--target-params-m", "0.3", "--force"]) == 0


def test_the_scan_scores_the_split_it_is_given(tmp_path, monkeypatch):
    """``split="train"`` keeps the val images out of the allocation (the main job's scan does this)."""
    import yolo_prune.evaluation as evaluation
    from yolo_prune import api
    from yolo_prune.data.synthetic import make_synthetic_dataset
    from yolo_prune.pruning.sensitivity import make_map_score_fn

    data = make_synthetic_dataset(tmp_path / "data", n_train=2, n_val=2, img_size=64, seed=0, profile="demo")
    loaded = api.load(cfg="yolov7-tiny", nc=5)
    seen = []
    monkeypatch.setattr(evaluation, "evaluate", lambda model, dataset, **kw: seen.append(dataset.images_dir)
                        or {"map50_95": 0.25})
    for split in ("train", "val"):
        score = make_map_score_fn(loaded, api.adapter_of(loaded), data, img_size=64, max_images=2, split=split)
        assert score(loaded.model) == 0.25
    assert [p.name for p in seen] == ["train", "val"]
    with pytest.raises(ValueError, match="--split train or val"):
        make_map_score_fn(loaded, api.adapter_of(loaded), data, img_size=64, max_images=2, split="test")


def test_a_channel_floor_shows_in_the_scan_points_without_a_warning_each(toy, caplog):
    floor = {"min_channels": 12}  # the toy's groups have 8-32 channels: the floor holds some of them
    with caplog.at_level(logging.WARNING, logger="yolo_prune.pruning.widths"):
        held = scan_sensitivity(toy, ToyAdapter(), fidelity_score(copy.deepcopy(toy)), ratios=(0.75,), img_size=IMG,
                                progress=None, prune_settings=floor)
    assert not caplog.records and held.settings["min_channels"] == 12  # recorded, never warned per point
    free = scan_sensitivity(toy, ToyAdapter(), fidelity_score(copy.deepcopy(toy)), ratios=(0.75,), img_size=IMG,
                            progress=None)
    saved = {u.name: u.points[0].pruned_channels for u in free.units}
    assert any(u.points[0].pruned_channels < saved[u.name] for u in held.units)  # what the floor kept
    with caplog.at_level(logging.WARNING, logger="yolo_prune.pruning.widths"):  # a real prune still says so
        prune_model(copy.deepcopy(toy), ToyAdapter(), img_size=IMG, pruning_ratio=0.75, **floor)
    assert "held at the minimum width" in caplog.text
