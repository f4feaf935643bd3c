"""Deployment: export round trips within tolerance, predict outputs, A/B benchmark keys and units.

Models are tiny (64-128 px, narrow widths); no timing is asserted anywhere.
"""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from conftest import SHARED_YOLOV7_CHECKPOINTS, build_yolov7, randomise_bn

from yolo_prune import api
from yolo_prune.adapters import get_adapter
from yolo_prune.adapters.base import LoadedModel
from yolo_prune.cli import main
from yolo_prune.deploy import ExportMismatchError, export_model, missing_runtime, read_metadata
from yolo_prune.deploy.ab import compare_latency, format_comparison, speedup_summary, time_interleaved
from yolo_prune.deploy.export import export_module, verify_export
from yolo_prune.deploy.predict import Detector, find_sources, predict

IMG = 64
SHARED_FILES = sorted(p.name for p in SHARED_YOLOV7_CHECKPOINTS.glob("*.pt")) if SHARED_YOLOV7_CHECKPOINTS.is_dir() \
    else []
ULTRALYTICS_CFGS = ("yolov8n.yaml", "yolo11n.yaml", "yolo26n.yaml")
needs_openvino = pytest.mark.skipif(missing_runtime("openvino") is not None, reason="openvino is not installed")


def _tiny(nc: int = 3, sharpen: bool = False) -> LoadedModel:
    """yolov7-tiny at width 0.25; ``sharpen`` spreads the scores so that NMS has no near-ties."""
    model = randomise_bn(build_yolov7("yolov7-tiny", width=0.25, nc=nc))
    if sharpen:
        with torch.no_grad():
            for conv in model.model[-1].m:
                conv.weight.mul_(20)
    return LoadedModel(model=model, family="yolov7", names=[f"c{i}" for i in range(nc)], stride=[8, 16, 32])


def _assert_matches(result, tolerance: float = 1e-3) -> None:
    assert result.checks and result.passed
    for check in result.checks:
        assert check.max_abs_diff_boxes_px / IMG <= tolerance and check.max_abs_diff_scores <= tolerance


@pytest.mark.parametrize("name", SHARED_FILES)
def test_shared_checkpoints_export_to_onnx_and_match(name, tmp_path):
    """Training (IDetect / IAuxDetect), deploy (Detect) and fused forms all round-trip."""
    loaded = api.load(SHARED_YOLOV7_CHECKPOINTS / name)
    result = export_model(loaded, tmp_path / "m.onnx", img_size=IMG, threads=1)
    _assert_matches(result)
    assert {c.input for c in result.checks} == {"random noise", "synthetic scene"}
    meta = read_metadata(result.path)
    assert meta["names"] == loaded.names and meta["img_size"] == IMG and meta["output"]["name"] == "predictions"


def test_fused_yolov7_exports_and_matches(tmp_path):
    adapter = get_adapter("yolov7")
    loaded = _tiny()
    loaded.model = adapter.fuse(loaded.model)  # Conv without BN, forward bound to fuseforward, implicits folded
    _assert_matches(export_model(loaded, tmp_path / "fused.onnx", img_size=IMG, threads=1))


@pytest.mark.parametrize("cfg", ULTRALYTICS_CFGS)
def test_ultralytics_models_export_to_onnx_and_match(cfg, tmp_path):
    loaded = api.load(cfg=cfg)
    result = export_model(loaded, tmp_path / "m.onnx", img_size=IMG, threads=1)
    _assert_matches(result)
    assert read_metadata(result.path)["family"] == "ultralytics"


@needs_openvino
def test_openvino_ir_matches(tmp_path):
    result = export_model(_tiny(), tmp_path / "m.xml", format="openvino", img_size=IMG, threads=1)
    _assert_matches(result)
    assert result.path.with_suffix(".bin").is_file() and result.onnx_path.is_file()
    assert read_metadata(result.path)["names"] == ["c0", "c1", "c2"]


def test_dynamic_batch_fp16_and_pruned_exports_match(tmp_path):
    loaded = _tiny()
    dynamic = export_model(loaded, tmp_path / "dyn.onnx", img_size=IMG, dynamic_batch=True, threads=1)
    assert {c.batch for c in dynamic.checks} == {1, 2}
    _assert_matches(dynamic)
    half = export_model(loaded, tmp_path / "half.onnx", img_size=IMG, half=True, threads=1)
    _assert_matches(half, tolerance=2e-2)
    import onnx

    assert onnx.load(str(half.path)).graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    api.prune(loaded, pruning_ratio=0.5, img_size=IMG, round_to=8)
    _assert_matches(export_model(loaded, tmp_path / "pruned.onnx", img_size=IMG, threads=1))


def test_nms_in_graph_gives_the_same_detections(tmp_path):
    loaded = _tiny(sharpen=True)
    result = export_model(loaded, tmp_path / "e2e.onnx", img_size=IMG, nms=True, conf_thres=0.01, dynamic_batch=True,
                          threads=1)
    _assert_matches(result)
    assert any(c.detections_export for c in result.checks), "the check must compare some detections"
    assert all(c.detections_torch == c.detections_export for c in result.checks)
    assert read_metadata(result.path)["output"]["columns"][0] == "batch_index"


def test_a_disagreeing_export_fails_loudly(tmp_path):
    loaded = _tiny()
    path = export_model(loaded, tmp_path / "m.onnx", img_size=IMG, verify=False).path
    other = export_module(loaded)
    with torch.no_grad():
        other.model.model[-1].m[0].bias.add_(1.0)  # objectness and boxes of the first level move
    checks = verify_export(other, path, "onnxruntime", img_size=IMG, threads=1)
    assert checks and not any(c.passed for c in checks)
    with pytest.raises(ExportMismatchError, match="max abs diff"):
        export_model(loaded, tmp_path / "strict.onnx", img_size=IMG, tolerance=0.0, threads=1)


@pytest.mark.parametrize("kwargs, message", [
    ({"format": "onnx", "path": "m.xml"}, "use --out"),
    ({"format": "tflite"}, "unknown export format"),
    ({"img_size": 70}, "multiple of the model's stride"),
    ({"opset": 9}, "too old"),
])
def test_bad_export_settings_are_refused(tmp_path, kwargs, message):
    path = tmp_path / kwargs.pop("path", "m.onnx")
    settings = {"img_size": IMG, "verify": False, **kwargs}
    with pytest.raises(ValueError, match=message):
        export_model(_tiny(), path, **settings)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_tensorrt_without_cuda_says_so(tmp_path):
    with pytest.raises(RuntimeError, match="needs an NVIDIA GPU"):
        export_model(_tiny(), tmp_path / "m.engine", format="tensorrt", img_size=IMG)


def _sources(folder):
    from yolo_prune.data.synthetic import render_image

    rng = np.random.default_rng(0)
    folder.mkdir()
    for i in range(2):
        cv2.imwrite(str(folder / f"{i:06d}.jpg"), render_image(rng, 96)[0])
    writer = cv2.VideoWriter(str(folder / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 5, (96, 64))
    for _ in range(3):
        writer.write(cv2.resize(render_image(rng, 96)[0], (96, 64)))
    writer.release()
    return folder


def test_predict_writes_images_video_txt_and_json(tmp_path):
    src = _sources(tmp_path / "src")
    assert len(find_sources([src])) == 3 and len(find_sources([str(src / "*.jpg")])) == 2
    detector = Detector.from_model(_tiny(sharpen=True), img_size=IMG, conf_thres=0.01, threads=1)
    result = predict(detector, [src], tmp_path / "out", save_txt=True, save_json=True, progress=False)
    out = tmp_path / "out"
    assert (result.images, result.videos, result.frames) == (2, 1, 5)
    assert {p.name for p in out.iterdir()} == {"000000.jpg", "000001.jpg", "clip.mp4", "labels", "predictions.json"}
    labels = sorted(p.name for p in (out / "labels").iterdir())
    assert labels == ["000000.txt", "000001.txt", "clip_0.txt", "clip_1.txt", "clip_2.txt"]
    lines = [line.split() for p in (out / "labels").iterdir() for line in p.read_text().splitlines()]
    records = json.loads((out / "predictions.json").read_text())
    assert len(lines) == len(records) == result.detections > 0
    assert all(len(line) == 6 and all(0 <= float(v) <= 1 for v in line[1:5]) for line in lines)
    assert {r["image_id"] for r in records} <= {0, 1, "clip_0", "clip_1", "clip_2"}
    assert cv2.VideoCapture(str(out / "clip.mp4")).get(cv2.CAP_PROP_FRAME_COUNT) == 3


def test_predict_on_an_exported_file_matches_pytorch(tmp_path):
    src = _sources(tmp_path / "src")
    loaded = _tiny(sharpen=True)
    path = export_model(loaded, tmp_path / "m.onnx", img_size=IMG, verify=False).path
    frames = [cv2.imread(str(p)) for p in sorted(src.glob("*.jpg"))]
    expected = Detector.from_model(loaded, img_size=IMG, conf_thres=0.01, threads=1)(frames)
    actual = Detector.from_export(path, conf_thres=0.01, threads=1)(frames)
    assert sum(map(len, expected)) > 0
    for e, a in zip(expected, actual, strict=False):
        np.testing.assert_allclose(a, e, atol=1e-2)
    with pytest.raises(ValueError, match="exported for 64 px"):
        Detector.from_export(path, img_size=128)


def test_predict_cli_with_classes_and_no_images(tmp_path):
    src = _sources(tmp_path / "src")
    weights = api.save(_tiny(sharpen=True), tmp_path / "tiny.pt")
    code = main(["predict", "--weights", str(weights), "--source", str(src / "*.jpg"), "--img-size", str(IMG),
                 "--conf-thres", "0.01", "--classes", "1", "--save-json", "--no-save", "--device", "cpu",
                 "--out", str(tmp_path / "out")])
    assert code == 0
    records = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert {r["category_id"] for r in records} <= {1}
    assert not list((tmp_path / "out").glob("*.jpg"))
    assert main(["predict", "--weights", str(weights), "--source", str(tmp_path / "nothing")]) == 2


def test_time_interleaved_alternates_the_order():
    calls = []
    time_interleaved([lambda: calls.append("A"), lambda: calls.append("B")], warmup=1, rounds=4)
    assert "".join(calls) == "AB" + "ABBAABBA"


def test_speedup_spread_decides_significance():
    assert speedup_summary([2.0, 2.1, 1.9], [1.0, 1.0, 1.0])["significant"]
    flat = speedup_summary([1.0, 1.1, 0.9, 1.05], [1.0, 1.0, 1.0, 1.0])
    assert not flat["significant"] and flat["speedup_p10"] <= 1.0 <= flat["speedup_p90"]


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_compare_latency_reports_keys_with_units(runtime, tmp_path):
    original, pruned = _tiny(), _tiny()
    api.prune(pruned, pruning_ratio=0.5, img_size=IMG, round_to=8)
    result = compare_latency(original, pruned, runtime=runtime, img_size=IMG, threads=1, warmup=0, rounds=2,
                             workdir=tmp_path)
    for side in ("original", "pruned"):
        assert set(result[side]) >= {"latency_ms_median", "latency_ms_p10", "latency_ms_p90", "fps", "gmacs"}
        assert result[side]["latency_ms_p10"] <= result[side]["latency_ms_median"] <= result[side]["latency_ms_p90"]
    assert set(result) >= {"runtime", "threads", "batch", "img_size", "speedup_median", "speedup_p10", "speedup_p90",
                           "significant", "macs_reduction", "speedup_per_macs_reduction", "runtime_settings"}
    assert result["threads"] == 1 and result["macs_reduction"] > 1.5
    assert "speed-up" in format_comparison(result)


def test_benchmark_cli_writes_json(tmp_path):
    original, pruned = _tiny(), _tiny()
    api.prune(pruned, pruning_ratio=0.5, img_size=IMG, round_to=8)
    a, b = api.save(original, tmp_path / "a.pt"), api.save(pruned, tmp_path / "b.pt")
    out = tmp_path / "bench.json"
    code = main(["benchmark", "--original", str(a), "--pruned", str(b), "--runtime", "onnxruntime", "--batch", "1", "2",
                 "--img-size", str(IMG), "--threads", "1", "--warmup", "0", "--rounds", "2", "--out", str(out)])
    assert code == 0
    results = json.loads(out.read_text())["results"]
    assert [r["batch"] for r in results] == [1, 2] and all(r["runtime"] == "onnxruntime" for r in results)
