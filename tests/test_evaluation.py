"""Evaluation: NMS, COCO metrics and the whole evaluate() pipeline, each against a reference.

NMS against a brute-force reference, COCO metrics against pycocotools, and evaluate() on a
dataset whose boxes a fake detector finds exactly.
"""
from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from _fixtures_data import REPO_ROOT, OracleDetector, load_script, random_gt_and_detections, write_box_dataset
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from yolo_prune.data import CocoDetectionDataset, DataError
from yolo_prune.evaluation import coco_metrics, evaluate, non_max_suppression
from yolo_prune.evaluation.coco_eval import STAT_NAMES

AP_KEYS = ("map50_95", "map50", "map75", "ap_small", "ap_medium", "ap_large")


# -- NMS -------------------------------------------------------------------------------------
def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    iw = (torch.min(a[2], b[2]) - torch.max(a[0], b[0])).clamp(min=0)
    ih = (torch.min(a[3], b[3]) - torch.max(a[1], b[1])).clamp(min=0)
    inter = iw * ih
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


def brute_force_nms(pred: torch.Tensor, conf: float, iou_thres: float, max_det: int, agnostic: bool) -> torch.Tensor:
    """Greedy NMS written out loop by loop: every (box, class) candidate with score > conf."""
    cands = []
    for row in pred.double():
        cx, cy, w, h, obj = row[:5].tolist()
        for c, p in enumerate(row[5:].tolist()):
            score = obj * p
            if obj > conf and score > conf:
                cands.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, score, c])
    cands.sort(key=lambda r: -r[4])
    kept: list[list[float]] = []
    for cand in cands:
        same = [k for k in kept if agnostic or k[5] == cand[5]]
        if all(_iou(torch.tensor(cand[:4]), torch.tensor(k[:4])) <= iou_thres for k in same):
            kept.append(cand)
    return torch.tensor(kept[:max_det], dtype=torch.float64).reshape(-1, 6)


@pytest.mark.parametrize("agnostic,max_det", [(False, 300), (True, 300), (False, 7)])
def test_nms_matches_brute_force(agnostic, max_det):
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(2, 60, 5 + 3, generator=g)
    pred[..., :2] *= 100
    pred[..., 2:4] = pred[..., 2:4] * 40 + 5
    out = non_max_suppression(pred, conf_thres=0.05, iou_thres=0.5, max_det=max_det, agnostic=agnostic)
    for got, x in zip(out, pred, strict=True):
        ref = brute_force_nms(x, 0.05, 0.5, max_det, agnostic)
        assert got.shape == ref.shape and len(ref) > 0
        torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-4)


def test_nms_single_class_uses_objectness_and_filters_classes():
    pred = torch.tensor([[[50, 50, 20, 20, 0.8, 0.1], [52, 50, 20, 20, 0.7, 0.9], [10, 10, 4, 4, 0.3, 0.5]]])
    (out,) = non_max_suppression(pred, conf_thres=0.25, iou_thres=0.5)
    assert out[:, 4].tolist() == pytest.approx([0.8, 0.3])  # objectness alone, overlapping box suppressed
    pred3 = torch.zeros(1, 2, 8)
    pred3[0, :, :4] = torch.tensor([[10, 10, 5, 5], [40, 40, 5, 5]])
    pred3[0, :, 4] = 1.0
    pred3[0, 0, 5], pred3[0, 1, 7] = 0.9, 0.8
    (kept,) = non_max_suppression(pred3, classes=[2])
    assert kept[:, 5].tolist() == [2.0]


def test_nms_empty_and_bad_shape():
    (out,) = non_max_suppression(torch.zeros(1, 10, 8))
    assert out.shape == (0, 6)
    with pytest.raises(ValueError, match="expected predictions"):
        non_max_suppression(torch.zeros(10, 8))


# -- COCO metrics against pycocotools ------------------------------------------------------
def reference_stats(gt: dict, dets: list[dict], tmp_path: Path) -> np.ndarray:
    """Pycocotools the documented way: json files, COCO(), loadRes(), COCOeval."""
    gt_file, dt_file = tmp_path / "gt.json", tmp_path / "dt.json"
    gt_file.write_text(json.dumps(gt))
    dt_file.write_text(json.dumps(dets))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_file))
        ev = COCOeval(coco_gt, coco_gt.loadRes(str(dt_file)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats)


CASES = {
    "typical": dict(seed=1),
    "crowd_heavy": dict(seed=2, crowd=True, n_images=12),
    "no_crowd": dict(seed=3, crowd=False),
    "non_contiguous_ids": dict(seed=4, category_ids=(3, 17, 90, 91)),
    "empty_ground_truth": dict(seed=5, empty_gt=True),
}


@pytest.mark.parametrize("backend", ["faster_coco_eval", "pycocotools"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_metrics_equal_pycocotools(case, backend, tmp_path):
    gt, dets = random_gt_and_detections(**CASES[case])
    ref = reference_stats(gt, dets, tmp_path)
    got = coco_metrics(gt, dets, backend=backend)
    np.testing.assert_allclose([got[k] for k in STAT_NAMES], ref, atol=1e-9)
    if case != "empty_ground_truth":
        assert 0 < got["map50_95"] < got["map50"] < 1  # a non-trivial case
    else:
        assert got["map50_95"] == -1


def test_empty_predictions_give_zero_not_a_crash():
    gt, _ = random_gt_and_detections(6)
    for backend in ("faster_coco_eval", "pycocotools"):
        got = coco_metrics(gt, [], backend=backend)
        assert all(got[k] in (0.0, -1.0) for k in STAT_NAMES) and got["map50_95"] == 0.0
        assert all(row["ap50_95"] in (0.0, -1.0) for row in got["per_class"])


def test_backends_agree_per_class():
    gt, dets = random_gt_and_detections(7, n_images=20)
    a = coco_metrics(gt, dets, backend="faster_coco_eval")
    b = coco_metrics(gt, dets, backend="pycocotools")
    for ra, rb in zip(a["per_class"], b["per_class"], strict=True):
        assert ra["ap50_95"] == pytest.approx(rb["ap50_95"], abs=1e-12)
    # the mean of the per-class AP is the headline mAP
    assert np.mean([r["ap50_95"] for r in a["per_class"]]) == pytest.approx(a["map50_95"], abs=1e-12)


def test_hand_computed_ap_for_one_box():
    """GT 10x10 at the origin; one detection 10x7.2 inside it: IoU 0.72.

    Matched at IoU thresholds 0.50, 0.55, ..., 0.70 (5 of 10), missed above: AP50-95 = 0.5.
    """
    gt = {"images": [{"id": 1, "file_name": "a.jpg", "width": 50, "height": 50}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 4, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0}],
          "categories": [{"id": 4, "name": "thing"}]}
    dets = [{"image_id": 1, "category_id": 4, "bbox": [0, 0, 10, 7.2], "score": 0.9}]
    for backend in ("faster_coco_eval", "pycocotools"):
        got = coco_metrics(gt, dets, backend=backend)
        assert got["map50_95"] == pytest.approx(0.5)
        assert (got["map50"], got["map75"]) == (pytest.approx(1.0), 0.0)
        assert got["ap_small"] == pytest.approx(0.5) and got["ap_medium"] == -1 and got["ap_large"] == -1


def test_results_for_unknown_image_or_category_are_errors():
    gt, dets = random_gt_and_detections(8)
    with pytest.raises(ValueError, match="image id 999"):
        coco_metrics(gt, [dict(dets[0], image_id=999)])
    with pytest.raises(ValueError, match="category_id 0"):
        coco_metrics(gt, [dict(dets[0], category_id=0)])
    with pytest.raises(KeyError, match="faster_coco_eval"):
        coco_metrics(gt, dets, backend="faster-coco")


# -- evaluate(): the whole pipeline ----------------------------------------------------------
@pytest.fixture()
def box_dataset(tmp_path):
    return write_box_dataset(tmp_path)


@pytest.mark.parametrize("rect,batch", [(True, 2), (False, 3)])
def test_exact_detector_scores_map_one(box_dataset, rect, batch):
    images, ann = box_dataset
    ds = CocoDetectionDataset(images, ann, img_size=64, rect=rect, batch_size=batch)
    m = evaluate(OracleDetector(), ds, batch_size=batch)
    assert m["map50_95"] == pytest.approx(1.0) and m["map75"] == pytest.approx(1.0)
    assert m["n_images"] == len(ds) == 5 and m["n_detections"] == 7  # 1 + 2 + 3 + 1 boxes in 4 images
    assert set(m["speed_ms"]) == {"data", "preprocess", "inference", "nms", "postprocess"}
    assert [r["category_id"] for r in m["per_class"]] == [2, 5, 9]


def test_evaluate_equals_pycocotools_on_its_results_file(box_dataset, tmp_path):
    images, ann = box_dataset
    ds = CocoDetectionDataset(images, ann, img_size=64, rect=True, batch_size=2)
    out = tmp_path / "dets.json"
    m = evaluate(OracleDetector(jitter=1.5), ds, results_path=out)
    dets = json.loads(out.read_text())
    assert {d["category_id"] for d in dets} <= {2, 5, 9}
    ref = reference_stats(ds.coco.dataset, dets, tmp_path)
    np.testing.assert_allclose([m[k] for k in STAT_NAMES], ref, atol=1e-9)
    assert 0 < m["map50_95"] < 1


def test_evaluate_max_images_restricts_ground_truth(box_dataset):
    images, ann = box_dataset
    ds = CocoDetectionDataset(images, ann, img_size=64, batch_size=2)
    m = evaluate(OracleDetector(), ds, max_images=2)
    assert m["n_images"] == 2 and m["map50_95"] == pytest.approx(1.0)  # unseen images' GT not counted as misses


def test_evaluate_restores_training_mode_and_handles_no_detections(box_dataset):
    images, ann = box_dataset
    ds = CocoDetectionDataset(images, ann, img_size=64)
    model = OracleDetector()
    model.train()
    model.scale.data.zero_()  # objectness 0: nothing passes the confidence threshold
    m = evaluate(model, ds)
    assert model.training and m["n_detections"] == 0 and m["map50_95"] == 0.0


def test_class_count_mismatch_is_a_clear_error(box_dataset):
    images, ann = box_dataset
    ds = CocoDetectionDataset(images, ann, img_size=64)
    with pytest.raises(DataError, match="predicts 5 classes but the dataset has 3"):
        evaluate(OracleDetector(nc=5), ds)


def test_augmented_dataset_is_refused(box_dataset):
    images, ann = box_dataset
    ds = CocoDetectionDataset(images, ann, img_size=64, augment=True, hyp={"mosaic": 0.0})
    with pytest.raises(DataError, match="augment=False"):
        evaluate(OracleDetector(), ds)


# -- a real YOLOv7-tiny, end to end -----------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic_yaml(tmp_path_factory):
    from yolo_prune.data.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("syn"), n_train=0, n_val=6, img_size=96, seed=3,
                                  profile="hard")


def test_yolov7_tiny_end_to_end(synthetic_yaml, tmp_path):
    models_yolo = pytest.importorskip("models.yolo")
    from yolo_prune.data import load_data_config

    cfg = models_yolo.load_cfg(REPO_ROOT / "configs/models/training/yolov7-tiny.yaml")
    cfg["width_multiple"] = 0.125
    data = load_data_config(synthetic_yaml)
    model = models_yolo.Model(cfg, nc=data.nc)
    ds = CocoDetectionDataset(data.val_images, data.val_ann, img_size=96, rect=True, batch_size=3)
    out = tmp_path / "dets.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights: fine
        m = evaluate(model, ds, batch_size=3, results_path=out)
    dets = json.loads(out.read_text())
    assert m["n_images"] == 6 and 0 < m["n_detections"] == len(dets) <= 6 * 300
    assert {d["category_id"] for d in dets} <= {1, 3, 5, 7, 9, 11}
    np.testing.assert_allclose([m[k] for k in STAT_NAMES], reference_stats(ds.coco.dataset, dets, tmp_path),
                               atol=1e-9)


def test_eval_script_writes_report(synthetic_yaml, tmp_path):
    pytest.importorskip("models.yolo")
    from yolo_prune import api

    loaded = api.get_adapter("yolov7").build("yolov7-tiny", nc=6, width_multiple=0.125)
    weights = api.save(loaded, tmp_path / "tiny.pt")
    out = tmp_path / "eval.json"
    rc = load_script("evaluate").main(["--weights", str(weights), "--data", str(synthetic_yaml), "--img", "64", "--batch", "3", "--device",
               "cpu", "--workers", "0", "--bench-runs", "2", "--out", str(out), "--backend", "pycocotools"])
    report = json.loads(out.read_text())
    assert rc == 0 and report["settings"]["backend"] == "pycocotools" and report["settings"]["conf_thres"] == 0.001
    assert 0 < report["model"]["params_m"] < 1 and report["latency"]["runs"] == 2 and report["fused"]
    assert set(AP_KEYS) <= set(report["metrics"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_half_precision_on_cuda_matches_fp32(box_dataset):
    images, ann = box_dataset
    ds = CocoDetectionDataset(images, ann, img_size=64, rect=True, batch_size=2)
    full = evaluate(OracleDetector(), ds, device="cuda")
    half = evaluate(OracleDetector(), ds, device="cuda", half=True)
    assert half["settings"]["half"] and half["map50_95"] == pytest.approx(full["map50_95"]) == pytest.approx(1.0)
