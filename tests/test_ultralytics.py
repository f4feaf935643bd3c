"""The Ultralytics adapter: block rewrites, pruning, saving for ultralytics.YOLO, fine-tuning.

Models are n-scale, built from Ultralytics' yamls (random weights), run at 64-96 px.
Everything works offline and writes only under tmp_path.
"""
from __future__ import annotations

import copy
import json
import os

os.environ.setdefault("YOLO_OFFLINE", "1")  # before Ultralytics is imported: no network checks
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("YOLO_VERBOSE", "false")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from torch import nn  # noqa: E402

ul = pytest.importorskip("ultralytics")

from yolo_prune.adapters import adapter_for_model, get_adapter  # noqa: E402
from yolo_prune.adapters.ultralytics.blocks import rewrite_split_blocks  # noqa: E402
from yolo_prune.adapters.ultralytics.trainer import coco_to_yolo, finetune  # noqa: E402
from yolo_prune.io import CheckpointError  # noqa: E402
from yolo_prune.pruning import conv_out_channels, prune_model  # noqa: E402

CFGS = ["yolov8n.yaml", "yolo11n.yaml", "yolov5nu.yaml", "yolo26n.yaml"]
IMG = 64


@pytest.fixture(scope="module")
def adapter():
    return get_adapter("ultralytics")


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics, so a rewrite that drops or misorders channels shows."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) * 2 - 1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=gen) - 0.5)
    return model


def _build(adapter, cfg: str, nc: int | None = None):
    loaded = adapter.build(cfg, nc=nc)
    _randomise_bn(loaded.model)
    return loaded


def _head_out_channels(model: nn.Module) -> list[int]:
    head = model.model[-1]
    branches = [b for name in ("cv2", "cv3", "one2one_cv2", "one2one_cv3") for b in (getattr(head, name, None) or [])]
    return [b[-1].out_channels for b in branches]


# -- tiny COCO-json data set ---------------------------------------------------------------
@pytest.fixture(scope="module")
def coco_data(tmp_path_factory):
    """This project's synthetic shapes set (COCO json, 6 classes): 8 train and 4 val images."""
    from yolo_prune.data import load_data_config
    from yolo_prune.data.synthetic import make_synthetic_dataset

    data_yaml = make_synthetic_dataset(tmp_path_factory.mktemp("coco"), n_train=8, n_val=4, img_size=96, seed=0,
                                       profile="hard")
    config = load_data_config(data_yaml)
    return data_yaml, {split: config.split(split) for split in ("train", "val")}


# -- rewrites and pruning ------------------------------------------------------------------
@pytest.mark.parametrize("cfg", CFGS)
def test_block_rewrite_changes_no_output(adapter, cfg):
    model = _build(adapter, cfg).model.eval()
    x = torch.rand(2, 3, IMG, IMG + 32)
    with torch.no_grad():
        before = model(x)
        rewritten = adapter.prepare_for_pruning(copy.deepcopy(model))
        after = rewritten(x)
    names = {type(m).__name__ for m in rewritten.modules()}
    assert not names & {"C2f", "C3k2", "C2PSA", "PSA"}
    assert all(type(m).__module__.split(".")[0] in ("ultralytics", "torch") for m in rewritten.modules())
    torch.testing.assert_close(after[0], before[0], rtol=1e-5, atol=1e-4)
    raw_before, raw_after = (out[1].get("one2many", out[1]) for out in (before, after))
    for key in ("boxes", "scores"):
        torch.testing.assert_close(raw_after[key], raw_before[key], rtol=1e-5, atol=1e-4)


def _split_blocks() -> dict:
    from ultralytics.nn.modules import block as b

    return {
        "C2f": lambda: b.C2f(16, 24, n=2, shortcut=True), "C3k2": lambda: b.C3k2(16, 24, n=1, c3k=True),
        "C3k2-attn": lambda: b.C3k2(16, 128, n=1, attn=True), "C2fCIB": lambda: b.C2fCIB(16, 24, n=1),
        "C2fPSA": lambda: b.C2fPSA(128, 128, n=1), "RepNCSPELAN4": lambda: b.RepNCSPELAN4(16, 24, 16, 8),
        "ELAN1": lambda: b.ELAN1(16, 24, 16, 8), "C2": lambda: b.C2(16, 24, n=1),
        "C2PSA": lambda: b.C2PSA(128, 128, n=2), "PSA": lambda: b.PSA(128, 128),
    }


@pytest.mark.parametrize("name", list(_split_blocks()))
def test_every_split_block_rewrite_is_exact(name):
    torch.manual_seed(0)
    block = _randomise_bn(_split_blocks()[name]()).eval()
    holder = nn.Sequential(block)
    x = torch.randn(2, block.cv1.conv.in_channels, 8, 12)
    with torch.no_grad():
        before = holder(x)
        assert rewrite_split_blocks(holder) == 1
        after = holder(x)
    assert type(holder[0]).__name__ in ("C3f", "C3")
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cfg", CFGS)
def test_prune_halves_channels_and_keeps_outputs(adapter, cfg):
    model = _build(adapter, cfg).model
    head_before = _head_out_channels(model)
    x = torch.rand(1, 3, IMG, IMG)
    with torch.no_grad():
        shape_before = adapter.decode(model.eval()(x)).shape
    result = prune_model(model, adapter, img_size=IMG, pruning_ratio=0.5)
    assert result.macs_after < 0.5 * result.macs_before
    assert result.params_after < 0.5 * result.params_before
    assert _head_out_channels(result.model) == head_before  # box (DFL) and class outputs intact
    assert adapter.matches(result.model)
    with torch.no_grad():
        assert adapter.decode(result.model.eval()(x)).shape == shape_before
        other = result.model(torch.rand(1, 3, IMG + 32, IMG))  # head caches follow the new input size
    assert other[0].shape[-1] == sum((IMG + 32) * IMG // s ** 2 for s in (8, 16, 32))


def test_ratio_zero_changes_nothing(adapter):
    model = _build(adapter, "yolov8n.yaml").model
    before = conv_out_channels(adapter.prepare_for_pruning(copy.deepcopy(model)))
    result = prune_model(model, adapter, img_size=IMG, pruning_ratio=0.0)
    assert conv_out_channels(result.model) == before
    assert result.macs_after == result.macs_before


def test_attention_kept_whole_and_ffn_pruned(adapter):
    model = _build(adapter, "yolo11n.yaml").model
    attn_before = {n: m.out_channels for n, m in model.named_modules() if ".attn." in n and isinstance(m, nn.Conv2d)}
    ffn_hidden = {n: m.out_channels for n, m in model.named_modules() if n.endswith("ffn.0.conv")}
    prune_model(model, adapter, img_size=IMG, pruning_ratio=0.5)
    convs = dict(model.named_modules())
    assert attn_before and all(convs[n].out_channels == c for n, c in attn_before.items())
    assert ffn_hidden and all(convs[n].out_channels == c // 2 for n, c in ffn_hidden.items())


def test_unsupported_split_block_is_refused(adapter):
    from ultralytics.nn.modules.block import ADown

    model = adapter.build("yolov8n.yaml").model
    layer = model.model[3]  # a stride-2 Conv(32, 64); YOLOv9c/e use ADown there, which splits its input
    model.model[3] = ADown(layer.conv.in_channels, layer.conv.out_channels)
    model.model[3].i, model.model[3].f = layer.i, layer.f
    with pytest.raises(NotImplementedError, match="ADown"):
        adapter.prepare_for_pruning(model)


def test_rewrite_is_idempotent(adapter):
    model = _build(adapter, "yolo11n.yaml").model
    assert rewrite_split_blocks(model) > 0
    assert rewrite_split_blocks(model) == 0


# -- decode, loss, identification -----------------------------------------------------------
def test_decode_usual_layout(adapter):
    y = torch.rand(2, 4 + 3, 10)
    raw = {"boxes": torch.rand(2, 64, 10), "scores": torch.rand(2, 3, 10), "feats": []}
    out = adapter.decode((y, raw))
    assert out.shape == (2, 10, 5 + 3)
    torch.testing.assert_close(out[..., :4], y[:, :4].transpose(1, 2))
    assert torch.all(out[..., 4] == 1)
    torch.testing.assert_close(out[..., 5:], y[:, 4:].transpose(1, 2))


def test_decode_end_to_end_layout(adapter):
    y = torch.tensor([[[10.0, 20.0, 30.0, 60.0, 0.9, 2.0], [0.0, 0.0, 4.0, 4.0, 0.1, 0.0]]])
    branch = {"boxes": torch.rand(1, 4, 21), "scores": torch.rand(1, 3, 21), "feats": []}
    out = adapter.decode((y, {"one2many": branch, "one2one": branch}))
    expected = torch.tensor([[[20.0, 40.0, 20.0, 40.0, 1.0, 0.0, 0.0, 0.9], [2.0, 2.0, 4.0, 4.0, 1.0, 0.1, 0.0, 0.0]]])
    torch.testing.assert_close(out, expected)


def test_end_to_end_head_decodes_after_pruning(adapter):
    model = _build(adapter, "yolo26n.yaml").model
    prune_model(model, adapter, img_size=IMG, pruning_ratio=0.5)
    model.eval().end2end = True  # the NMS-free one-to-one branch
    with torch.no_grad():
        out = adapter.decode(model(torch.rand(1, 3, IMG, IMG)))
    assert out.shape == (1, 84, 85)  # max_det = all 84 anchors at 64 px
    assert torch.all(out[..., 5:].sum(-1) <= 1 + 1e-6)


@pytest.mark.parametrize("cfg", ["yolov8n.yaml", "yolo26n.yaml"])
def test_loss_reaches_every_trainable_parameter(adapter, cfg):
    model = _build(adapter, cfg, nc=3).model.train()
    loss_fn = adapter.loss(model, {})
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.4, 0.3], [1, 2, 0.3, 0.6, 0.2, 0.4]])
    loss, items = loss_fn(model(torch.rand(2, 3, IMG, IMG)), targets, None)
    loss.backward()
    assert torch.isfinite(loss) and items.shape == (3,)
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None and ".dfl." not in n]
    missing = [n for n in missing if "one2one" not in n]  # the one-to-one branch trains on detached features
    assert not missing


def test_identification(adapter, tmp_path):
    assert adapter.owns_cfg("yolo11n.yaml") and adapter.owns_cfg("yolov5nu.yaml")
    v7_like = tmp_path / "v7.yaml"
    v7_like.write_text(yaml.safe_dump({"nc": 80, "anchors": [[10, 13]], "backbone": [],
                                       "head": [[-1, 1, "IDetect", []]]}))
    assert not adapter.owns_cfg(v7_like)
    assert adapter_for_model(adapter.build("yolov8n.yaml").model).name == "ultralytics"


# -- saving and loading -------------------------------------------------------------------
@pytest.fixture(scope="module")
def pruned_v8(adapter, tmp_path_factory):
    """A pruned 6-class yolov8n (the synthetic set's classes) saved with ``adapter.save``."""
    loaded = _build(adapter, "yolov8n.yaml", nc=6)
    prune_model(loaded.model, adapter, img_size=IMG, pruning_ratio=0.5)
    path = adapter.save(loaded, tmp_path_factory.mktemp("saved") / "pruned.pt")
    return loaded, path


def test_save_load_reproduces_outputs(adapter, pruned_v8):
    loaded, path = pruned_v8
    raw = torch.load(path, map_location="cpu", weights_only=False)
    assert {"model", "train_args", "date", "version"} <= raw.keys()
    assert all(p.dtype == torch.float32 for p in raw["model"].parameters())
    reloaded = adapter.load(path)  # trust=False: Ultralytics' restricted loader accepts stock classes
    x = torch.rand(1, 3, IMG, IMG)
    with torch.no_grad():
        assert torch.equal(reloaded.model.eval()(x)[0], loaded.model.eval()(x)[0])
    assert conv_out_channels(reloaded.model) == conv_out_channels(loaded.model)


def test_loads_checkpoint_written_by_ultralytics(adapter, tmp_path):
    path = tmp_path / "official-format.pt"
    ul.YOLO("yolo11n.yaml").save(path)  # fp16, the format of released weights
    loaded = adapter.load(path)
    assert loaded.family == "ultralytics" and loaded.nc == 80 and loaded.stride == [8, 16, 32]
    params = dict(loaded.model.named_parameters())
    assert all(p.dtype == torch.float32 for p in params.values())
    assert all(p.requires_grad == (".dfl." not in n) for n, p in params.items())
    result = prune_model(loaded.model, adapter, img_size=IMG, pruning_ratio=0.5)
    assert result.macs_after < 0.5 * result.macs_before


class Untrusted:
    """A class outside Ultralytics' allow-list (pickled by reference)."""


def test_untrusted_checkpoint_refused_unless_trusted(adapter, pruned_v8, tmp_path):
    loaded, _ = pruned_v8
    path = adapter.save(loaded, tmp_path / "extra.pt", extra={"payload": Untrusted()})
    with pytest.raises(CheckpointError, match="trust=True"):
        adapter.load(path)
    assert adapter.load(path, trust=True).nc == 6


def test_missing_checkpoint_is_a_clear_error(adapter, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        adapter.load(tmp_path / "yolov8n.pt")  # must not try to download


def test_ultralytics_yolo_predicts_vals_and_exports(pruned_v8, coco_data, tmp_path):
    _, path = pruned_v8
    _, splits = coco_data
    model = ul.YOLO(str(path))
    results = model.predict(np.zeros((96, 80, 3), np.uint8), imgsz=IMG, verbose=False)
    assert len(results) == 1 and results[0].boxes.data.shape[-1] == 6
    yolo_yaml = coco_to_yolo(splits, tmp_path / "yolo")
    metrics = model.val(data=str(yolo_yaml), imgsz=IMG, batch=2, plots=False, project=str(tmp_path / "val"),
                        verbose=False)
    assert 0.0 <= metrics.box.map <= 1.0
    onnx_path = model.export(format="onnx", imgsz=IMG)
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    x = torch.rand(1, 3, IMG, IMG)
    (onnx_out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        torch_out = get_adapter("ultralytics").load(path).model.eval()(x)[0]
    np.testing.assert_allclose(onnx_out, torch_out.numpy(), rtol=1e-3, atol=1e-2)


def test_project_evaluator_scores_a_pruned_model(adapter, pruned_v8, coco_data):
    from yolo_prune.data import CocoDetectionDataset
    from yolo_prune.evaluation import evaluate

    loaded, _ = pruned_v8
    _, splits = coco_data
    dataset = CocoDetectionDataset(*splits["val"], img_size=IMG)
    metrics = evaluate(adapter.fuse(loaded.model), dataset, decode=adapter.decode, batch_size=2)
    assert metrics["n_images"] == 4 and 0.0 <= metrics["map50_95"] <= metrics["map50"] <= 1.0


# -- data conversion and fine-tuning ------------------------------------------------------
def test_coco_to_yolo_labels(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    (images / "a.jpg").write_bytes(b"not decoded here")
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 50}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 9, "bbox": [10, 5, 20, 10], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [90, 40, 30, 30], "iscrowd": 0},  # clipped
            {"id": 3, "image_id": 1, "category_id": 2, "bbox": [0, 0, 50, 50], "iscrowd": 1},  # crowd: skipped
        ],
        "categories": [{"id": 9, "name": "nine"}, {"id": 2, "name": "two"}]}))
    data_yaml = coco_to_yolo({"train": (images, ann), "val": (images, ann)}, tmp_path / "out")
    spec = yaml.safe_load(data_yaml.read_text())
    assert spec["names"] == {0: "two", 1: "nine"}  # sorted by category id
    rows = [[float(v) for v in line.split()] for line in (tmp_path / "out/labels/val/a.txt").read_text().splitlines()]
    np.testing.assert_allclose(rows, [[1, 0.2, 0.2, 0.2, 0.2], [0, 0.95, 0.9, 0.1, 0.2]], atol=1e-6)
    assert (tmp_path / "out/images/train/a.jpg").read_bytes() == b"not decoded here"


@pytest.mark.slow
def test_short_finetune_keeps_pruned_model_and_fp32(adapter, coco_data, tmp_path):
    data_yaml, _ = coco_data
    loaded = _build(adapter, "yolo11n.yaml", nc=6)
    prune_model(loaded.model, adapter, img_size=IMG, pruning_ratio=0.5)
    channels = conv_out_channels(loaded.model)
    tuned = finetune(loaded, data_yaml, epochs=1, img_size=IMG, batch_size=4, project=tmp_path / "runs", name="ft")
    assert conv_out_channels(tuned.model) == channels  # the trainer did not rebuild the model from its yaml
    weights = tmp_path / "runs/ft/weights"
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(weights / name, map_location="cpu", weights_only=False)
        assert all(p.dtype == torch.float32 for p in ckpt["model"].state_dict().values() if p.is_floating_point())
    changed = any(not torch.equal(a, b) for a, b in zip(tuned.model.state_dict().values(),
                                                         loaded.model.state_dict().values(), strict=True))
    assert changed  # one epoch moved the weights (and ``loaded`` itself was not trained in place)
    results = ul.YOLO(str(weights / "best.pt")).predict(np.zeros((64, 64, 3), np.uint8), imgsz=IMG, verbose=False)
    assert len(results) == 1


@pytest.mark.slow
def test_yolo_train_with_pruned_trainer_keeps_architecture(pruned_v8, coco_data, tmp_path):
    from yolo_prune.adapters.ultralytics.trainer import PrunedDetectionTrainer

    loaded, path = pruned_v8
    _, splits = coco_data
    model = ul.YOLO(str(path))
    model.train(data=str(coco_to_yolo(splits, tmp_path / "yolo")), epochs=1, imgsz=IMG, batch=4, device="cpu",
                project=str(tmp_path / "runs"), name="yolo", exist_ok=True, plots=False, verbose=False,
                trainer=PrunedDetectionTrainer)
    assert conv_out_channels(model.model) == conv_out_channels(loaded.model)
    assert all(p.dtype == torch.float32 for p in model.model.parameters())


def test_finetune_command_routes_ultralytics_to_its_trainer(pruned_v8, coco_data, tmp_path, capsys):
    """``yolo-prune finetune`` on a pruned Ultralytics file runs Ultralytics' trainer, keeps the widths."""
    from yolo_prune.cli import main

    loaded, path = pruned_v8
    data_yaml, _ = coco_data
    out = tmp_path / "runs" / "ft"
    argv = ["finetune", "--weights", str(path), "--data", str(data_yaml), "--epochs", "1", "--img", str(IMG),
            "--batch", "4", "--workers", "0", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    tuned = get_adapter("ultralytics").load(out / "weights" / "best.pt")
    assert conv_out_channels(tuned.model) == conv_out_channels(loaded.model)
    # engine-only options are refused by name rather than silently dropped
    assert main([*argv, "--teacher", str(path)]) == 2
    assert "teacher" in capsys.readouterr().err


# -- a practitioner's workflow: other classes, the drop-in YOLO, numpy-free files --------------------
@pytest.mark.parametrize("cfg", ["yolov8n.yaml", "yolo26n.yaml"])
def test_set_classes_keeps_box_branch_and_pruned_widths(adapter, cfg):
    loaded = _build(adapter, cfg, nc=80)
    prune_model(loaded.model, adapter, img_size=IMG, pruning_ratio=0.5)
    model = loaded.model.train()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    x = torch.rand(1, 3, IMG, IMG)
    with torch.no_grad():
        before = model(x)
    widths = conv_out_channels(model)
    adapter.set_classes(model, ["a", "b", "c"])
    with torch.no_grad():
        after = model(x)
    branches = [k for k in ("one2many", "one2one") if k in before] or [None]
    for key in branches:
        old, new = (before[key], after[key]) if key else (before, after)
        assert torch.equal(old["boxes"], new["boxes"])
        assert new["scores"].shape[1] == 3 and new["scores"].shape[2] == old["scores"].shape[2]
    changed = {n for n, c in conv_out_channels(model).items() if widths.get(n) != c}
    assert changed and all("cv3." in n for n in changed)  # only the class convs' outputs changed
    assert model.names == {0: "a", 1: "b", 2: "c"} and model.model[-1].nc == 3
    model.eval()
    assert adapter.decode(model(x)).shape[-1] == 5 + 3


def test_pruned_ultralytics_model_warns_that_its_yaml_cannot_keep_it(adapter):
    from yolo_prune import api

    loaded = _build(adapter, "yolov8n.yaml", nc=6)
    assert adapter.cfg_form(loaded.model).cfg == loaded.model.yaml  # unpruned: its yaml rebuilds it
    with pytest.warns(api.PrunedCfgWarning, match="yolo_prune.ultralytics import YOLO"):
        api.prune(loaded, img_size=IMG, pruning_ratio=0.5)


def test_saved_ultralytics_file_has_no_numpy_global(pruned_v8):
    from yolo_prune.io.inspect import pickle_globals

    _, path = pruned_v8
    assert not {g for g in pickle_globals(path) if g[0].split(".")[0] == "numpy"}


def test_drop_in_yolo_trains_with_the_pruned_trainer(pruned_v8):
    from yolo_prune.adapters.ultralytics.trainer import PrunedDetectionTrainer
    from yolo_prune.ultralytics import YOLO

    _, path = pruned_v8
    model = YOLO(str(path))
    assert model.task_map["detect"]["trainer"] is PrunedDetectionTrainer
    assert isinstance(model, ul.YOLO)


@pytest.mark.slow
def test_drop_in_yolo_train_keeps_pruned_model_on_other_classes(adapter, coco_data, tmp_path):
    """``from yolo_prune.ultralytics import YOLO``: a pruned 80-class file trains on the 6-class set."""
    from yolo_prune.io.inspect import pickle_globals
    from yolo_prune.ultralytics import YOLO

    loaded = _build(adapter, "yolov8n.yaml", nc=80)
    prune_model(loaded.model, adapter, img_size=IMG, pruning_ratio=0.5)
    path = adapter.save(loaded, tmp_path / "pruned80.pt")
    _, splits = coco_data
    data = coco_to_yolo(splits, tmp_path / "yolo")
    model = YOLO(str(path))
    model.train(data=str(data), epochs=1, imgsz=IMG, batch=4, device="cpu", workers=0, project=str(tmp_path / "runs"),
                name="dropin", exist_ok=True, plots=False, verbose=False, val=False)
    nc = len(yaml.safe_load(data.read_text())["names"])
    widths = {n: c for n, c in conv_out_channels(loaded.model).items() if "cv3." not in n}
    assert {n: c for n, c in conv_out_channels(model.model).items() if "cv3." not in n} == widths
    assert model.model.model[-1].nc == nc
    for name in ("last.pt", "best.pt"):
        weights = tmp_path / "runs/dropin/weights" / name
        if weights.exists():
            assert not {g for g in pickle_globals(weights) if g[0].split(".")[0] == "numpy"}, name
