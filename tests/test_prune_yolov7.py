"""Channel pruning of every YOLOv7 family through the adapter, and the prune command."""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import YOLOV7_FAMILIES, build_yolov7, randomise_bn

from yolo_prune import api
from yolo_prune.adapters import LoadedModel, get_adapter
from yolo_prune.cli import main as cli_main
from yolo_prune.pruning import PruningError, prune_model

IMG = 128  # a multiple of the P6 stride 64


def _outputs(model: torch.nn.Module, x: torch.Tensor, *, train: bool = False) -> list[torch.Tensor]:
    model.train(train)
    with torch.no_grad():
        out = model(x)
    model.eval()
    pred = [out] if isinstance(out, torch.Tensor) else list(out if train else [out[0], *out[1]])
    return pred


@pytest.mark.parametrize("kind", ["training", "deploy"])
@pytest.mark.parametrize("family", YOLOV7_FAMILIES)
def test_half_ratio_lowers_macs_and_keeps_shapes(family, kind):
    model = build_yolov7(family, width=0.125, nc=3, kind=kind)
    x = torch.rand(1, 3, IMG, IMG)
    eval_shapes = [t.shape for t in _outputs(model, x)]
    train_shapes = [t.shape for t in _outputs(model, x, train=True)]
    result = prune_model(model, get_adapter("yolov7"), img_size=IMG, pruning_ratio=0.5)
    assert result.macs_after < 0.6 * result.macs_before
    assert [t.shape for t in _outputs(result.model, x)] == eval_shapes
    assert [t.shape for t in _outputs(result.model, x, train=True)] == train_shapes  # aux heads too
    assert all(torch.isfinite(t).all() for t in _outputs(result.model, x))


def test_shared_checkpoints_prune(yolov7_checkpoints_dir):
    for path in sorted(yolov7_checkpoints_dir.glob("*.pt")):
        loaded = api.load(path)
        result = api.prune(loaded, img_size=IMG, pruning_ratio=0.5)
        assert result.macs_after < result.macs_before, path.name


def test_ratio_zero_changes_no_output(tiny_yolov7):
    randomise_bn(tiny_yolov7)
    x = torch.rand(1, 3, IMG, IMG)
    before = _outputs(tiny_yolov7, x)
    result = prune_model(tiny_yolov7, get_adapter("yolov7"), img_size=IMG, pruning_ratio=0.0)
    assert all(torch.equal(a, b) for a, b in zip(before, _outputs(result.model, x), strict=True))


def test_fuse_after_pruning_matches_unfused():
    model = randomise_bn(build_yolov7("yolov7", width=0.125, nc=3))  # RepConv + IDetect
    adapter = get_adapter("yolov7")
    prune_model(model, adapter, img_size=IMG, pruning_ratio=0.5)
    x = torch.rand(1, 3, IMG, IMG)
    ref = _outputs(model, x)[0]
    fused = _outputs(adapter.fuse(copy.deepcopy(model).eval()), x)[0]
    torch.testing.assert_close(fused, ref, rtol=1e-4, atol=1e-3)


def test_same_settings_same_structure():
    shapes = []
    for _ in range(2):
        model = build_yolov7("yolov7-tiny", width=0.25, seed=1)
        prune_model(model, get_adapter("yolov7"), img_size=IMG, importance="lamp", pruning_ratio=0.4,
                    global_pruning=True)
        shapes.append({k: tuple(v.shape) for k, v in model.state_dict().items()})
    assert shapes[0] == shapes[1]


@pytest.mark.parametrize("importance", ["taylor", "bn_scale", "fpgm"])
def test_other_criteria_prune(importance, tiny_yolov7):
    result = prune_model(tiny_yolov7, get_adapter("yolov7"), img_size=IMG, importance=importance,
                         pruning_ratio=0.3)
    assert result.params_after < result.params_before


def test_implicit_parameters_follow_their_convs():
    model = build_yolov7("yolov7-tiny", width=0.25)
    prune_model(model, get_adapter("yolov7"), img_size=IMG, pruning_ratio=0.5)
    head = model.model[-1]
    for ia, conv in zip(head.ia, head.m, strict=True):
        assert ia.implicit.shape[1] == conv.in_channels == ia.channel
    for im, conv in zip(head.im, head.m, strict=True):
        assert im.implicit.shape[1] == conv.out_channels  # the head's outputs are never pruned


def test_pruned_checkpoint_round_trip(tmp_path, tiny_yolov7):
    adapter = get_adapter("yolov7")
    loaded = LoadedModel(tiny_yolov7, "yolov7", list(tiny_yolov7.names), [8, 16, 32])
    api.prune(loaded, img_size=IMG, pruning_ratio=0.5)
    path = api.save(loaded, tmp_path / "pruned.pt")
    back = api.load(path)
    x = torch.rand(1, 3, IMG, IMG)
    ref = _outputs(loaded.model.half().float(), x)[0]  # the file holds float16 weights
    torch.testing.assert_close(_outputs(back.model, x)[0], ref, rtol=0, atol=0)
    assert back.meta["pruning"]["pruning_ratio"] == 0.5  # provenance travels with the file
    assert adapter.matches(back.model)


# -- the prune command ------------------------------------------------------------------
@pytest.fixture()
def tiny_checkpoint(tmp_path) -> Path:
    model = build_yolov7("yolov7-tiny", width=0.25, nc=3)
    loaded = LoadedModel(model, "yolov7", ["a", "b", "c"], [8, 16, 32])
    return api.save(loaded, tmp_path / "tiny.pt")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_prune_command_writes_checkpoint_and_report(tmp_path, tiny_checkpoint, capsys):
    digest = _sha(tiny_checkpoint)
    out = tmp_path / "out" / "pruned.pt"
    code = cli_main(["prune", "--weights", str(tiny_checkpoint), "--ratio", "0.5", "--img", str(IMG),
                     "--round-to", "8", "--out", str(out)])
    assert code == 0
    assert _sha(tiny_checkpoint) == digest  # the input is never modified
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["after"]["gmacs"] < report["before"]["gmacs"]
    assert report["after"]["file_mib"] < report["before"]["file_mib"]
    assert "GMACs" in capsys.readouterr().out
    back = api.load(out)
    convs = [m for name, m in back.model.named_modules() if isinstance(m, torch.nn.Conv2d) and ".m." not in name]
    assert all(c.out_channels % 8 == 0 for c in convs)
    # an existing output needs --force
    assert cli_main(["prune", "--weights", str(tiny_checkpoint), "--img", str(IMG), "--out", str(out),
                     "--no-latency"]) == 2
    assert "--force" in capsys.readouterr().err
    assert cli_main(["prune", "--weights", str(tiny_checkpoint), "--img", str(IMG), "--out", str(out),
                     "--no-latency", "--force"]) == 0


def test_prune_command_dry_run_changes_nothing(tmp_path, tiny_checkpoint, capsys):
    assert cli_main(["prune", "--weights", str(tiny_checkpoint), "--img", str(IMG), "--dry-run",
                     "--no-latency"]) == 0
    printed = capsys.readouterr().out
    assert "would lose" in printed and "model." in printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.pt"]


@pytest.mark.parametrize("argv, message", [
    (["--ratio", "1.5"], "must be in [0, 1)"),
    (["--importance", "l3"], "Did you mean"),
    (["--layer-ratio", "model.7*"], "GLOB=RATIO"),
])
def test_prune_command_bad_settings(tiny_checkpoint, capsys, argv, message):
    assert cli_main(["prune", "--weights", str(tiny_checkpoint), "--img", str(IMG), "--no-latency", *argv]) == 2
    assert message in capsys.readouterr().err


def test_prune_command_missing_file_and_same_output(tmp_path, tiny_checkpoint, capsys):
    assert cli_main(["prune", "--weights", str(tmp_path / "nope.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli_main(["prune", "--weights", str(tiny_checkpoint), "--out", str(tiny_checkpoint), "--force"]) == 2
    assert "never overwritten" in capsys.readouterr().err


def test_every_group_ignored_fails_loudly(tiny_yolov7):
    class IgnoreAll(type(get_adapter("yolov7"))):
        def ignored_layers(self, model):
            return [model]

    with pytest.raises(PruningError, match="removed nothing"):
        prune_model(tiny_yolov7, IgnoreAll(), img_size=IMG, pruning_ratio=0.5)


def test_prune_command_applies_a_recipe(tmp_path, tiny_checkpoint):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("pruning_ratio: 0.0\nlayer_ratios:\n  'model.2.conv': 0.5\n")
    out = tmp_path / "r.pt"
    assert cli_main(["prune", "--weights", str(tiny_checkpoint), "--img", str(IMG), "--recipe", str(recipe),
                     "--out", str(out), "--no-latency"]) == 0
    before, after = api.load(tiny_checkpoint).model, api.load(out).model
    assert after.model[2].conv.out_channels == before.model[2].conv.out_channels // 2
    assert after.model[0].conv.out_channels == before.model[0].conv.out_channels  # only the recipe's layer


def test_prune_command_unstructured_keeps_shapes_and_macs(tmp_path, tiny_checkpoint):
    out = tmp_path / "u.pt"
    assert cli_main(["prune", "--weights", str(tiny_checkpoint), "--img", str(IMG), "--mode", "unstructured",
                     "--sparsity", "0.5", "--out", str(out), "--no-latency"]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["after"]["gmacs"] == pytest.approx(report["before"]["gmacs"])  # dense MACs unchanged
    model = api.load(out).model
    convs = [m for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and ".m." not in name]
    zeros = sum((c.weight == 0).sum().item() for c in convs) / sum(c.weight.numel() for c in convs)
    assert zeros >= 0.49


def test_prune_command_iterative_with_fine_tuning(tmp_path):
    from yolo_prune.data.synthetic import make_synthetic_dataset

    data = make_synthetic_dataset(tmp_path / "data", n_train=4, n_val=2, img_size=64, seed=0, profile="hard")
    names = yaml.safe_load(data.read_text())["names"]
    # a checkpoint with other classes (3, not the data's 6): the head is rebuilt before the first step
    model = build_yolov7("yolov7-tiny", width=0.125, nc=3)
    weights = api.save(LoadedModel(model, "yolov7", ["a", "b", "c"], [8, 16, 32]), tmp_path / "m.pt")
    out = tmp_path / "it.pt"
    assert cli_main(["prune", "--weights", str(weights), "--img", "64", "--ratio", "0.5", "--steps", "2",
                     "--data", str(data), "--epochs-per-step", "1", "--out", str(out), "--no-latency",
                     "--compensate", str(data), "--calibration-images", "4"]) == 0  # refitted at every step
    final = api.load(out)
    assert final.names == names and final.model.model[-1].nc == len(names)
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["iterative"]["settings"]["compensate"] is True  # recorded, not the calibration images
    steps = report["iterative"]["steps"]
    assert len(steps) == 3  # the original, then two prune + fine-tune steps
    assert steps[0]["gmacs"] > steps[1]["gmacs"] > steps[2]["gmacs"]
    assert report["after"]["gmacs"] < 0.6 * report["before"]["gmacs"]


def test_fused_model_prunes_saves_and_loads_safely(tmp_path):
    """A fused (deploy) model prunes, and its file loads back in safe mode with the same outputs.

    Fused: Conv without BN, RepConv re-parameterised, forward bound to fuseforward.
    """
    adapter = get_adapter("yolov7")
    model = adapter.fuse(randomise_bn(build_yolov7("yolov7", width=0.125, nc=3)).eval())
    result = prune_model(model, adapter, img_size=IMG, pruning_ratio=0.5)
    assert result.macs_after < 0.6 * result.macs_before
    loaded = LoadedModel(result.model, "yolov7", ["a", "b", "c"], [8, 16, 32])
    back = api.load(api.save(loaded, tmp_path / "fused-pruned.pt"))
    x = torch.rand(1, 3, IMG, IMG)
    ref = _outputs(copy.deepcopy(result.model).half().float(), x)[0]
    torch.testing.assert_close(_outputs(back.model, x)[0], ref, rtol=0, atol=0)
