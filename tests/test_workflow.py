"""A practitioner's workflow: other classes, the official trainers, numpy 1.x clients, file modes.

Tiny YOLOv7 models (width 0.125-0.25) at 64-128 px; everything is written under tmp_path.
"""
from __future__ import annotations

import copy
import os
import stat
import warnings

import pytest
import torch
import yaml
from conftest import build_yolov7, randomise_bn

from models.yolo import CFG_ROOT, Model
from yolo_prune import api
from yolo_prune.adapters import get_adapter
from yolo_prune.adapters.base import LoadedModel
from yolo_prune.engine.classes import fit_classes
from yolo_prune.io.atomic import atomic_write_text
from yolo_prune.io.inspect import pickle_globals
from yolo_prune.pruning import conv_out_channels, prune_model

IMG = 64
P5_AND_P6 = ("yolov7-tiny", "yolov7", "yolov7x", "yolov7-w6", "yolov7-e6", "yolov7-d6", "yolov7-e6e")


def numpy_globals(path) -> set[tuple[str, str]]:
    """Every numpy global the file's pickle references (numpy 1.x cannot import ``numpy._core``)."""
    return {g for g in pickle_globals(path) if g[0].split(".")[0] == "numpy"}


def _loaded(model, names=None) -> LoadedModel:
    names = names or [str(i) for i in range(model.nc)]
    return LoadedModel(model=model, family="yolov7", names=list(names), stride=[8, 16, 32])


def _raw_maps(model, x):
    """Train-mode head maps ``[B, na, ny, nx, no]`` with BatchNorm statistics frozen."""
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    with torch.no_grad():
        return model(x)


# -- pruned widths in the cfg: what official train.py rebuilds from ------------------------------
@pytest.mark.parametrize("kind", ["training", "deploy"])
@pytest.mark.parametrize("family", P5_AND_P6)
def test_pruned_cfg_rebuilds_the_pruned_model_from_yaml_alone(family, kind):
    if kind == "deploy" and family not in ("yolov7-tiny", "yolov7"):
        pytest.skip("one deploy cfg per head form is enough")
    model = randomise_bn(build_yolov7(family, width=0.25, kind=kind, nc=3))
    adapter = get_adapter("yolov7")
    prune_model(model, adapter, img_size=128, pruning_ratio=0.5, round_to=8)
    form = adapter.cfg_form(model)
    assert form.cfg is not None, form.reason
    text = yaml.safe_dump(form.cfg, sort_keys=False)  # what is written beside the checkpoint
    rebuilt = Model(yaml.safe_load(text))
    rebuilt.load_state_dict(model.state_dict(), strict=True)  # every tensor, every shape
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x)[0], model.eval()(x)[0])


def test_unpruned_model_keeps_its_own_cfg():
    model = build_yolov7("yolov7-tiny", width=0.25)
    assert get_adapter("yolov7").cfg_form(model).cfg == model.yaml


def test_widths_off_the_multiple_of_8_have_no_cfg_and_warn():
    loaded = _loaded(build_yolov7("yolov7-tiny", width=0.25))
    with pytest.warns(api.PrunedCfgWarning, match="multiple of 8.*--round-to 8.*yolo-prune finetune"):
        api.prune(loaded, img_size=128, pruning_ratio=0.3)
    assert get_adapter("yolov7").cfg_form(loaded.model).cfg is None


def test_saved_checkpoint_carries_the_pruned_cfg(tmp_path):
    from yolo_prune.adapters.yolov7.checkpoint import read_checkpoint

    loaded = _loaded(build_yolov7("yolov7", width=0.125))
    with warnings.catch_warnings():
        warnings.simplefilter("error", api.PrunedCfgWarning)  # round_to 8: expressible, no warning
        api.prune(loaded, img_size=128, pruning_ratio=0.5, round_to=8)
    path = api.save(loaded, tmp_path / "pruned.pt")
    cfg_path = api.save_cfg(loaded, tmp_path / "pruned.yaml")
    saved = read_checkpoint(path)["model"]
    from_yaml = yaml.safe_load(cfg_path.read_text())
    assert saved.yaml == from_yaml and from_yaml["width_multiple"] == 1.0
    for cfg in (saved.yaml, from_yaml):  # official --cfg '' and --cfg pruned.yaml
        Model(cfg).load_state_dict(saved.float().state_dict(), strict=True)
    assert loaded.model.yaml["width_multiple"] == 0.125  # the caller's model is untouched


# -- other classes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("family,kind", [("yolov7-tiny", "training"), ("yolov7-tiny", "deploy"),
                                         ("yolov7-w6", "training")])
def test_yolov7_head_rebuilt_for_other_classes_keeps_boxes_and_objectness(family, kind):
    """Detect / IDetect / IAuxDetect: box + objectness outputs bit for bit, class outputs for the new nc."""
    model = randomise_bn(build_yolov7(family, width=0.125, kind=kind))
    prune_model(model, get_adapter("yolov7"), img_size=128, pruning_ratio=0.5, round_to=8)
    widths = conv_out_channels(model)
    x = torch.rand(2, 3, 128, 128)
    before = _raw_maps(model, x)
    get_adapter("yolov7").set_classes(model, ["a", "b", "c"])
    after = _raw_maps(model, x)
    assert len(after) == len(before)
    for old, new in zip(before, after, strict=True):
        assert new.shape[-1] == 8 and new.shape[:-1] == old.shape[:-1]
        assert torch.equal(new[..., :5], old[..., :5])
    assert model.nc == model.model[-1].nc == 3 and model.names == ["a", "b", "c"] and model.yaml["nc"] == 3
    head_convs = {n for n in widths if ".m." in n or ".m2." in n}
    assert {n: c for n, c in conv_out_channels(model).items() if n not in head_convs} == \
        {n: c for n, c in widths.items() if n not in head_convs}  # pruned widths stay
    pred = model.eval()(x)[0]
    assert pred.shape[-1] == 8 and torch.isfinite(pred).all()
    assert get_adapter("yolov7").cfg_form(model).cfg["nc"] == 3


def test_fused_idetect_head_rebuilt_for_other_classes():
    model = randomise_bn(build_yolov7("yolov7-tiny", width=0.125)).eval()
    fused = copy.deepcopy(model).fuse()
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        before = fused(x)[0]
        get_adapter("yolov7").set_classes(fused, ["a", "b"])
        after = fused(x)[0]
    assert after.shape[-1] == 7 and torch.allclose(after[..., :5], before[..., :5])


def test_fit_classes_rules():
    adapter = get_adapter("yolov7")
    loaded = _loaded(build_yolov7("yolov7-tiny", width=0.125, nc=3), names=["cat", "dog", "bird"])
    assert fit_classes(loaded, adapter, ["cat", "dog", "bird"]) is None
    with pytest.raises(ValueError, match=r"other names .*\[cat, dog, bird\].*\[x, y, z\].*--rename-classes"):
        fit_classes(loaded, adapter, ["x", "y", "z"])
    assert loaded.names == ["cat", "dog", "bird"]  # refused: nothing changed
    assert "carry the data's names" in fit_classes(loaded, adapter, ["x", "y", "z"], rename=True)
    assert loaded.model.names == ["x", "y", "z"]
    note = fit_classes(loaded, adapter, ["p", "q"])
    assert "predicted 3 classes" in note and loaded.nc == 2 and loaded.model.model[-1].nc == 2
    unnamed = _loaded(build_yolov7("yolov7-tiny", width=0.125, nc=2))  # built from a cfg: '0', '1'
    assert "carry" in fit_classes(unnamed, adapter, ["p", "q"])


def test_teacher_with_other_classes_distils_boxes_and_objectness_only():
    from yolo_prune.adapters.yolov7.distill import build_distill_loss

    student = randomise_bn(build_yolov7("yolov7-tiny", width=0.125, nc=3))
    teacher = randomise_bn(build_yolov7("yolov7-tiny", width=0.125, nc=80), seed=1)
    x = torch.rand(1, 3, 64, 64)
    s_maps, t_maps = _raw_maps(student, x), _raw_maps(teacher, x)
    with pytest.raises(ValueError, match="same classes"):
        build_distill_loss(student, teacher)(s_maps, t_maps)
    distil = build_distill_loss(student, teacher, classes=False)
    assert float(distil(s_maps, t_maps)[1]) > 0
    same = [torch.cat((t[..., :5], s[..., 5:]), -1) for s, t in zip(s_maps, t_maps, strict=True)]  # student copies box + obj
    assert float(distil(same, t_maps)[1]) == pytest.approx(0.0, abs=1e-6)


@pytest.fixture(scope="module")
def shapes_data(tmp_path_factory):
    from yolo_prune.data.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("shapes"), n_train=4, n_val=2, img_size=IMG, seed=0)


@pytest.mark.slow
def test_finetune_80_class_pruned_checkpoint_on_data_with_other_classes(shapes_data, tmp_path):
    """The common case: a pruned COCO checkpoint fine-tuned on custom data; files stay numpy-free."""
    from yolo_prune.adapters.yolov7.checkpoint import load_checkpoint
    from yolo_prune.cli import main
    from yolo_prune.data import load_data_config

    names = load_data_config(shapes_data).names
    loaded = _loaded(build_yolov7("yolov7-tiny", width=0.125, nc=80))
    api.prune(loaded, img_size=128, pruning_ratio=0.5, round_to=8)
    weights = api.save(loaded, tmp_path / "pruned.pt")
    teacher = api.save(_loaded(build_yolov7("yolov7-tiny", width=0.125, nc=80)), tmp_path / "teacher.pt")
    out = tmp_path / "run"
    argv = ["finetune", "--weights", str(weights), "--teacher", str(teacher), "--data", str(shapes_data),
            "--epochs", "1", "--img-size", str(IMG), "--batch-size", "2", "--nominal-batch", "2", "--workers", "0",
            "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    tuned = load_checkpoint(out / "weights" / "best.pt")
    assert tuned.names == list(names) and tuned.model.model[-1].nc == len(names)
    body = {n: c for n, c in conv_out_channels(loaded.model).items() if ".77.m." not in n}
    assert {n: c for n, c in conv_out_channels(tuned.model).items() if ".77.m." not in n} == body
    assert tuned.model.yaml["nc"] == len(names) and tuned.model.yaml["width_multiple"] == 1.0
    for path in (weights, out / "weights" / "last.pt", out / "weights" / "best.pt"):
        assert not numpy_globals(path), path


# -- numpy 1.x clients ------------------------------------------------------------------------------
def test_no_numpy_global_in_any_saved_yolov7_file(tmp_path):
    from yolo_prune.adapters.yolov7.checkpoint import save_checkpoint

    model = build_yolov7("yolov7-tiny", width=0.125)
    files = [save_checkpoint(model, tmp_path / "a.pt", best_fitness=0.5),
             save_checkpoint(model, tmp_path / "b.pt", ema=model, updates=3, optimizer={"state": {}}, half=False,
                             extra={"pruning": {"ratio": 0.5}})]
    loaded = _loaded(model)
    loaded.meta["best_fitness"] = 0.25
    files.append(api.save(loaded, tmp_path / "c.pt", extra={"best_fitness": torch.tensor(0.5).numpy()}))
    for path in files:
        assert not numpy_globals(path), path
    assert type(torch.load(files[2], weights_only=False)["best_fitness"]) is float


# -- outputs follow the umask; the project's hyps raise no warning ------------------------------------
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_outputs_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = atomic_write_text("x", tmp_path / "out.txt")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode


@pytest.mark.parametrize("name", ["hyp.finetune.yaml", "hyp.scratch.short.yaml", "hyp.scratch.tiny.yaml",
                                  "hyp.scratch.p5.yaml", "hyp.scratch.p6.yaml"])
def test_project_hyp_files_raise_no_warning(name, shapes_data):
    from yolo_prune.data import CocoDetectionDataset, load_data_config
    from yolo_prune.engine.hyp import load_hyp
    from yolo_prune.paths import HYP_DIR

    images, ann = load_data_config(shapes_data).split("train")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CocoDetectionDataset(images, ann, img_size=IMG, augment=True, hyp=load_hyp(HYP_DIR / name), batch_size=2)


def test_cfg_paths_resolve_inside_the_package():
    from yolo_prune import paths

    assert (CFG_ROOT / "training" / "yolov7-tiny.yaml").is_file()
    assert (paths.HYP_DIR / "hyp.finetune.yaml").is_file() and (paths.PRUNE_RECIPES_DIR / "uniform-50.yaml").is_file()


# -- conventions: official flag names, --quiet ------------------------------------------------------
OFFICIAL_ALIASES = {
    "eval": ["--img-size", "--batch-size", "--conf-thres", "--iou-thres", "--device", "--project", "--name"],
    "prune": ["--img-size", "--pruning-ratio", "--device"],
    "finetune": ["--img-size", "--batch-size", "--device", "--project", "--name", "--exist-ok"],
    "sensitivity": ["--img-size", "--batch-size", "--device"],
    "run": ["--img-size", "--batch-size", "--device"],
    "make-synthetic": ["--img-size"],
    "predict": ["--img-size", "--conf-thres", "--iou-thres", "--device", "--project", "--name"],
    "export": ["--img-size", "--batch-size"],
    "benchmark": ["--img-size", "--batch-size", "--device"],
}


@pytest.mark.parametrize("command", sorted(OFFICIAL_ALIASES))
def test_every_command_takes_the_official_flag_names_and_quiet(command):
    from yolo_prune.cli import build_parser

    sub = build_parser([command])._subparsers._group_actions[0].choices[command]
    flags = {s for action in sub._actions for s in action.option_strings}
    assert set(OFFICIAL_ALIASES[command]) | {"--quiet"} <= flags


def test_aliases_mean_the_same_as_the_short_flags():
    from yolo_prune.cli import build_parser

    parser = build_parser(["eval"])
    official = parser.parse_args(["eval", "--img-size", "96", "--batch-size", "4", "--conf-thres", "0.1",
                                  "--iou-thres", "0.5"])
    ours = parser.parse_args(["eval", "--img", "96", "--batch", "4", "--conf", "0.1", "--iou", "0.5"])
    assert vars(official) == vars(ours)


def test_finetune_project_and_name_make_the_run_folder(tmp_path):
    from pathlib import Path

    from yolo_prune.cli import build_parser
    from yolo_prune.cli.finetune import run_folder

    parser = build_parser(["finetune"])
    assert run_folder(parser.parse_args(["finetune", "--project", str(tmp_path), "--name", "a"])) == tmp_path / "a"
    assert run_folder(parser.parse_args(["finetune"])) == Path("runs/finetune/exp")
    with pytest.raises(ValueError, match="either --out or --project"):
        run_folder(parser.parse_args(["finetune", "--out", "x", "--name", "a"]))


def test_eval_project_and_name_place_the_metrics_json(tmp_path):
    from pathlib import Path

    from yolo_prune.cli import build_parser
    from yolo_prune.cli.eval import eval_out

    parser = build_parser(["eval"])
    args = parser.parse_args(["eval", "--weights", "w/best.pt", "--project", str(tmp_path), "--name", "a"])
    assert eval_out(args) == tmp_path / "a" / "best-eval.json"
    assert eval_out(parser.parse_args(["eval", "--cfg", "yolov7-tiny", "--name", "b"])) == Path(
        "runs/eval/b/yolov7-tiny-eval.json")
    assert eval_out(parser.parse_args(["eval", "--weights", "w.pt"])) is None  # the job's default: beside w.pt
    with pytest.raises(ValueError, match="either --out or --project"):
        eval_out(parser.parse_args(["eval", "--out", "x.json", "--project", "p"]))


def test_prune_device_reaches_the_latency_measurement(tmp_path, monkeypatch):
    from yolo_prune.adapters import get_adapter, load_model
    from yolo_prune.jobs import prune as prune_job
    from yolo_prune.pruning.settings import PruneSettings

    seen = []
    monkeypatch.setattr(prune_job, "model_summary", lambda *a, latency=None, **k: seen.append(latency) or {})
    loaded = load_model(None, cfg="yolov7-tiny")
    prune_job.describe(loaded, get_adapter(loaded.family), PruneSettings(device="meta-test"), file=None)
    assert seen[0].device == "meta-test"


def test_prune_command_writes_the_cfg_beside_the_checkpoint_and_quiet_prints_nothing(tmp_path, capsys):
    from yolo_prune.adapters.yolov7.checkpoint import save_checkpoint
    from yolo_prune.cli import main

    weights = save_checkpoint(build_yolov7("yolov7-tiny", width=0.25), tmp_path / "tiny.pt")
    out = tmp_path / "pruned.pt"
    argv = ["prune", "--weights", str(weights), "--ratio", "0.5", "--round-to", "8", "--img-size", "128",
            "--no-latency", "--out", str(out)]
    assert main([*argv, "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    cfg = yaml.safe_load(out.with_suffix(".yaml").read_text())
    from yolo_prune.adapters.yolov7.checkpoint import load_checkpoint

    Model(cfg).load_state_dict(load_checkpoint(out).model.state_dict(), strict=True)
    assert main([*argv, "--force", "--round-to", "1"]) == 0  # widths off the multiple of 8: no cfg, a warning
    printed = capsys.readouterr().out
    assert "warning: the pruned widths cannot be written" in printed and "yolo-prune finetune" in printed
    assert not out.with_suffix(".yaml").exists()  # the first run's cfg would describe another model


# -- API: short reprs, one ratio keyword ------------------------------------------------------------
def test_results_print_short_reprs_and_ratio_is_accepted_under_both_names():
    loaded = api.load(cfg="yolov7-tiny", nc=3)
    assert repr(loaded).startswith("LoadedModel(yolov7, 3 classes,") and len(repr(loaded)) < 200
    result = api.prune(loaded, ratio=0.5, round_to=8, img_size=64)
    assert repr(result).startswith("PruneResult(params 6.02 M -> ") and len(repr(result)) < 200
    with pytest.raises(TypeError, match="once"):
        api.prune(loaded, ratio=0.5, pruning_ratio=0.5)


def test_rebuilt_class_outputs_are_seeded():
    adapter = get_adapter("yolov7")
    heads = []
    for _ in range(2):
        loaded = _loaded(build_yolov7("yolov7-tiny", width=0.125, nc=80))
        torch.rand(7)  # a different random stream before each: the rebuild must not depend on it
        fit_classes(loaded, adapter, ["a", "b"], seed=3)
        heads.append(loaded.model.model[-1].m[0].weight.clone())
    assert torch.equal(*heads)


def test_report_sizes_compare_one_precision():
    from yolo_prune.report import make_entry

    entry = make_entry({"name": "pruned", "file_mib": 6.4, "fp16_mib": 3.2})  # an fp32 file, 3.2 MiB in fp16
    assert entry["file_mib"] == 3.2
    assert make_entry({"name": "release", "file_mb": 12.0})["file_mib"] == 12.0  # older JSONs still read


def test_report_names_repeated_roles_apart_and_compares_macs_within_a_family():
    from yolo_prune.report.entries import make_entry, merge_entries
    from yolo_prune.report.render import table_rows

    entries = merge_entries([
        make_entry({"source": "runs/a/weights/best.pt", "gmacs": 4.0, "family": "yolov7"}),
        make_entry({"source": "runs/b/weights/best.pt", "gmacs": 2.0, "family": "yolov7"}),
        make_entry({"name": "yolov8n", "gmacs": 8.0, "family": "ultralytics"}),
        make_entry({"name": "yolov8n-pruned", "gmacs": 2.0, "family": "ultralytics"}),
    ])
    assert [e["name"] for e in entries] == ["best (a/weights)", "best (b/weights)", "yolov8n", "yolov8n-pruned"]
    macs_x = [row[3] for row in table_rows(entries)]
    assert macs_x == [1.0, 2.0, 1.0, 4.0]
