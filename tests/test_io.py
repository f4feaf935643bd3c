"""Safe checkpoint loading and saving (``yolo_prune.adapters.yolov7.checkpoint``).

Official-format files with random weights live in ../shared/checkpoints/yolov7; every other
file is written under ``tmp_path``.
"""
from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch_pruning as tp
import yaml
from conftest import REPO_ROOT, build_yolov7, randomise_bn

from models.common import Conv
from models.experimental import attempt_load
from models.yolo import CFG_ROOT, Model, load_cfg
from yolo_prune.adapters import get_adapter
from yolo_prune.adapters.yolov7.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from yolo_prune.io import CheckpointError

IMG = 64
OFFICIAL_KEYS = {"epoch", "best_fitness", "training_results", "model", "ema", "updates", "optimizer", "wandb_id"}


class Foreign:
    """A class no official checkpoint references; harmless to construct."""

    def __init__(self, value: int = 1) -> None:
        self.value = value


class RunsShell:
    """Unpickles as a call of os.system: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class FetchesForward:
    """Unpickles as getattr(<Conv>, 'forward'): an attribute fetch official files never make."""

    def __reduce__(self):
        return getattr, (Conv(3, 8), "forward")


def _run(model, x):
    with torch.no_grad():
        return model(x)


def _shared_files(directory: Path) -> list[Path]:
    files = sorted(directory.glob("*.pt"))
    assert files, f"no checkpoints in {directory}"
    return files


def _cfg_of(path: Path) -> tuple[str, str]:
    """'yolov7-deploy-w0.125.pt' -> ('deploy', 'yolov7')."""
    stem = path.stem.split("-w0")[0]
    kind = "deploy" if stem.endswith("-deploy") else "training"
    return kind, stem.removesuffix("-deploy")


# -- the shared official-format files -------------------------------------------------------------
def test_every_shared_checkpoint_loads_safely_and_matches_our_cfg(yolov7_checkpoints_dir):
    x = torch.rand(1, 3, IMG, IMG)
    for path in _shared_files(yolov7_checkpoints_dir):
        loaded = load_checkpoint(path)
        model = loaded.model
        assert isinstance(model, Model) and not model.training, path.name
        assert all(p.dtype == torch.float32 for p in model.parameters()), path.name
        assert loaded.family == "yolov7" and loaded.nc == 80 and loaded.stride[:3] == [8, 16, 32]
        assert loaded.meta["epoch"] == -1 and loaded.meta["best_fitness"] == 0.0 and not loaded.meta["from_ema"]
        pred, maps = _run(model, x)
        assert pred.shape[0] == 1 and pred.shape[-1] == 85 and torch.isfinite(pred).all(), path.name

        kind, family = _cfg_of(path)
        ours = load_cfg(CFG_ROOT / kind / f"{family}.yaml")
        theirs = loaded.cfg
        assert {k: ours[k] for k in ("anchors", "backbone", "head", "nc")} == \
               {k: theirs[k] for k in ("anchors", "backbone", "head", "nc")}, path.name
        ours["width_multiple"] = theirs["width_multiple"]
        ours_sd, theirs_sd = Model(ours).state_dict(), model.state_dict()
        assert list(ours_sd) == list(theirs_sd), path.name
        assert all(ours_sd[k].shape == theirs_sd[k].shape for k in ours_sd), path.name


def test_safe_load_equals_trusted_load(yolov7_checkpoints_dir):
    path = yolov7_checkpoints_dir / "yolov7-w0.125.pt"
    safe = load_checkpoint(path).model
    trusted = load_checkpoint(path, trust=True).model
    x = torch.rand(1, 3, IMG, IMG)
    assert torch.equal(_run(safe, x)[0], _run(trusted, x)[0])
    # our allow-list was scoped to our load, not left behind
    with pytest.raises(Exception, match="not an allowed global"):
        torch.load(path, weights_only=True)


def test_attempt_load_fuses_like_the_official_helper(yolov7_checkpoints_dir):
    path = yolov7_checkpoints_dir / "yolov7-tiny.pt"
    x = torch.rand(1, 3, IMG, IMG)
    expected = _run(load_checkpoint(path).model, x)[0]
    fused = attempt_load(path)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    torch.testing.assert_close(_run(fused, x)[0], expected, rtol=1e-4, atol=1e-4)


# -- refusals -------------------------------------------------------------------------------------
def test_foreign_class_is_refused_by_name_and_loads_when_trusted(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"model": build_yolov7(width=0.125), "note": Foreign(7)}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert f"{Foreign.__module__}.Foreign" in message and "--trust-checkpoint" in message
    loaded = load_checkpoint(path, trust=True)
    assert isinstance(loaded.model, Model) and loaded.meta["note"].value == 7


def test_code_running_pickle_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": RunsShell(marker)}, path)
    with pytest.raises(CheckpointError, match=r"posix\.system|os\.system|nt\.system") as info:
        load_checkpoint(path)
    assert "trust" in str(info.value)
    assert not marker.exists()


def test_getattr_is_limited_to_fuseforward(tmp_path):
    path = tmp_path / "getattr.pt"
    torch.save({"model": build_yolov7(width=0.125), "x": FetchesForward()}, path)
    with pytest.raises(CheckpointError, match="getattr"):
        load_checkpoint(path)


@pytest.mark.parametrize("content, expected", [
    (b"hello, this is not a model\n", "not a torch checkpoint"),
    (b"", "not a torch checkpoint"),
])
def test_non_checkpoint_files_are_refused(tmp_path, content, expected):
    path = tmp_path / "weights.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="not a file"):
        load_checkpoint(tmp_path)


def test_truncated_checkpoint(tmp_path, tiny_yolov7):
    good = save_checkpoint(tiny_yolov7, tmp_path / "good.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(bad)


@pytest.mark.parametrize("obj, expected", [
    ([1, 2, 3], "holds a list"),
    ({"epoch": 3, "weights": "x"}, "without a 'model' entry"),
])
def test_pickles_that_are_not_checkpoints(tmp_path, obj, expected):
    path = tmp_path / "other.pt"
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(path)


# -- bare state dicts -----------------------------------------------------------------------------
@pytest.mark.parametrize("wrap", ["bare", "state_dict", "model"])
def test_bare_state_dict_needs_cfg_and_loads_with_it(tmp_path, wrap):
    model = randomise_bn(build_yolov7(width=0.125, nc=3))
    state = model.state_dict()
    path = tmp_path / "sd.pt"
    torch.save({"bare": state, "state_dict": {"state_dict": state}, "model": {"model": state}}[wrap], path)
    with pytest.raises(CheckpointError, match="--cfg"):
        load_checkpoint(path)
    cfg = load_cfg("yolov7-tiny")
    cfg["width_multiple"] = 0.125
    loaded = load_checkpoint(path, cfg=cfg)
    assert loaded.nc == 3  # inferred from the head's weights
    x = torch.rand(1, 3, IMG, IMG)
    assert torch.equal(_run(loaded.model, x)[0], _run(model, x)[0])


def test_bare_state_dict_with_wrong_cfg_reports_keys(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(build_yolov7(width=0.125).state_dict(), path)
    mismatch = r"shape mismatches .*\[model.0.conv.weight \(8, 3, 3, 3\) vs \(32, 3, 3, 3\)"
    with pytest.raises(CheckpointError, match=mismatch):
        load_checkpoint(path, cfg="yolov7-tiny")  # full width: every conv differs
    with pytest.raises(CheckpointError, match="missing keys .*model.77.ia.0.implicit"):
        load_checkpoint(path, cfg=CFG_ROOT / "deploy" / "yolov7-tiny.yaml")  # Detect: no ia/im


# -- saving ---------------------------------------------------------------------------------------
def test_saved_file_is_official_and_input_untouched(tmp_path, tiny_yolov7):
    model = tiny_yolov7.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    path = save_checkpoint(model, tmp_path / "m.pt", epoch=4, best_fitness=0.25, training_results="row")
    assert model.training
    assert all(p.dtype == torch.float32 and p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    ckpt = read_checkpoint(path)
    assert set(ckpt) == OFFICIAL_KEYS
    assert type(ckpt["best_fitness"]) is float and ckpt["best_fitness"] == 0.25  # plain: numpy 1.x loads it
    assert ckpt["epoch"] == 4 and ckpt["training_results"] == "row" and ckpt["ema"] is None
    saved = ckpt["model"]
    assert all(p.dtype == torch.float16 and not p.requires_grad for p in saved.parameters())
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left nothing behind


def test_round_trip_is_bit_exact_also_in_a_fresh_process(tmp_path, tiny_yolov7):
    model = randomise_bn(tiny_yolov7)
    x = torch.rand(1, 3, IMG, IMG)
    torch.save(x, tmp_path / "x.pt")
    path = save_checkpoint(model, tmp_path / "m.pt", names=[f"c{i}" for i in range(80)], half=False)
    loaded = load_checkpoint(path)
    assert loaded.names[:2] == ["c0", "c1"]
    expected = _run(model, x)[0]
    assert torch.equal(_run(loaded.model, x)[0], expected)

    half_path = save_checkpoint(model, tmp_path / "h.pt")  # float16 on disk, like official files
    assert torch.equal(_run(load_checkpoint(half_path).model, x)[0],
                       _run(copy.deepcopy(model).half().float(), x)[0])

    script = textwrap.dedent(f"""
        import torch
        torch.set_num_threads(1)
        from yolo_prune.adapters.yolov7.checkpoint import load_checkpoint
        model = load_checkpoint({str(path)!r}).model
        with torch.no_grad():
            torch.save(model(torch.load({str(tmp_path / 'x.pt')!r}))[0], {str(tmp_path / 'y.pt')!r})
    """)
    subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, check=True, timeout=120)
    assert torch.equal(torch.load(tmp_path / "y.pt"), expected)


def test_ema_is_preferred_and_fused_models_round_trip(tmp_path):
    model = build_yolov7(width=0.125, seed=0)
    ema = randomise_bn(build_yolov7(width=0.125, seed=1))
    x = torch.rand(1, 3, IMG, IMG)
    path = save_checkpoint(model, tmp_path / "m.pt", ema=ema, updates=10, optimizer={"state": {}}, half=False)
    loaded = load_checkpoint(path)
    assert loaded.meta["from_ema"] and loaded.meta["updates"] == 10 and loaded.meta["has_optimizer"]
    assert torch.equal(_run(loaded.model, x)[0], _run(ema, x)[0])

    fused = copy.deepcopy(ema).fuse()  # pickles getattr(<Conv>, 'fuseforward') like official fused files
    path = save_checkpoint(fused, tmp_path / "fused.pt", half=False)
    assert torch.equal(_run(load_checkpoint(path).model, x)[0], _run(fused, x)[0])


def test_pruned_model_pickles_only_allow_listed_globals(tmp_path):
    model = randomise_bn(build_yolov7("yolov7", width=0.25))
    adapter = get_adapter("yolov7")
    pruner = tp.pruner.MagnitudePruner(
        model, torch.rand(1, 3, IMG, IMG), importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=0.5,
        ignored_layers=adapter.ignored_layers(model), unwrapped_parameters=adapter.unwrapped_parameters(model))
    pruner.step()
    adapter.finish_pruning(model)
    x = torch.rand(1, 3, IMG, IMG)
    path = save_checkpoint(model, tmp_path / "pruned.pt", half=False)
    loaded = load_checkpoint(path)  # safe mode
    assert torch.equal(_run(loaded.model, x)[0], _run(model, x)[0])
    assert sum(p.numel() for p in loaded.model.parameters()) == sum(p.numel() for p in model.parameters())


def test_names_must_match_classes(tmp_path, tiny_yolov7):
    with pytest.raises(ValueError, match="3 class names"):
        save_checkpoint(tiny_yolov7, tmp_path / "m.pt", names=["a", "b", "c"])


def test_adapter_save_keeps_extra_entries_loadable(tmp_path):
    adapter = get_adapter("yolov7")
    loaded = adapter.build("yolov7-tiny", nc=2, width_multiple=0.125)
    loaded.meta["pruning"] = {"ratio": 0.5, "cfg": tmp_path}  # a Path is stored as text
    path = adapter.save(loaded, tmp_path / "m.pt", extra={"epoch": 3, "half": False, "train_state": {"lr": 0.01}})
    back = adapter.load(path)
    assert back.meta["epoch"] == 3 and back.meta["train_state"] == {"lr": 0.01}
    assert back.meta["pruning"] == {"ratio": 0.5, "cfg": str(tmp_path)}
    assert back.names == loaded.names and back.stride == [8, 16, 32]
    assert yaml.safe_dump(back.cfg) == yaml.safe_dump(loaded.cfg)
