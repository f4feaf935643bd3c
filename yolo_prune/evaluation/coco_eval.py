"""COCO bbox metrics through faster-coco-eval (default) or pycocotools (the reference).

Both backends receive the same ground truth and the same detections and report COCO's twelve
summary numbers plus per-class AP. A metric whose ground truth is empty (no objects at all, or
none in an area range) is -1, as in pycocotools; with ground truth but no detections it is 0.
"""
from __future__ import annotations

import contextlib
import io
import logging
import time
from typing import Any, Callable

import numpy as np

from yolo_prune.registry import Registry

logger = logging.getLogger(__name__)

# name -> fn(gt_dataset, results, image_ids) -> (stats [12], precision [T, R, K, A, M])
COCO_BACKENDS: "Registry[Callable[..., tuple[np.ndarray, np.ndarray]]]" = Registry("COCO metric backend")

STAT_NAMES = ("map50_95", "map50", "map75", "ap_small", "ap_medium", "ap_large",
              "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large")


def _gt_copy(gt_dataset: dict[str, Any]) -> dict[str, Any]:
    """Shallow per-record copy: the COCO APIs annotate records in place (``ignore``, ``area``)."""
    return {**gt_dataset, "images": [dict(r) for r in gt_dataset["images"]],
            "annotations": [dict(r) for r in gt_dataset["annotations"]],
            "categories": [dict(r) for r in gt_dataset["categories"]]}


def _load_results(coco_cls: type, gt: Any, results: list[dict]) -> Any:
    """The library's own ``loadRes``; an empty list (which pycocotools rejects) gives no detections."""
    if results:
        return gt.loadRes([dict(r) for r in results])
    dt = coco_cls()
    dt.dataset = {"images": list(gt.dataset["images"]), "categories": list(gt.dataset["categories"]),
                  "annotations": []}
    dt.createIndex()
    return dt


def _run(eval_obj: Any, image_ids: list[int] | None) -> tuple[np.ndarray, np.ndarray]:
    if image_ids is not None:
        eval_obj.params.imgIds = sorted(image_ids)
    eval_obj.evaluate()
    eval_obj.accumulate()
    eval_obj.summarize()
    return np.asarray(eval_obj.stats[:12], dtype=float), np.asarray(eval_obj.eval["precision"])


@COCO_BACKENDS.register("pycocotools")
def _pycocotools(gt_dataset: dict, results: list[dict], image_ids: list[int] | None) -> tuple[np.ndarray, np.ndarray]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # it prints every step
        gt = COCO()
        gt.dataset = _gt_copy(gt_dataset)
        gt.createIndex()
        dt = _load_results(COCO, gt, results)
        return _run(COCOeval(gt, dt, "bbox"), image_ids)


@COCO_BACKENDS.register("faster_coco_eval")
def _faster_coco_eval(gt_dataset: dict, results: list[dict], image_ids: list[int] | None
                      ) -> tuple[np.ndarray, np.ndarray]:
    from faster_coco_eval import COCO, COCOeval_faster

    gt = COCO(_gt_copy(gt_dataset), print_function=logger.debug)
    dt = _load_results(COCO, gt, results)
    return _run(COCOeval_faster(gt, dt, "bbox", print_function=logger.debug), image_ids)


def check_results(gt_dataset: dict[str, Any], results: list[dict]) -> None:
    """Raises ``ValueError`` when detections name images or categories the ground truth lacks."""
    image_ids = {img["id"] for img in gt_dataset["images"]}
    cat_ids = {c["id"] for c in gt_dataset["categories"]}
    for r in results:
        if r["image_id"] not in image_ids:
            raise ValueError(f"detection {r} is for image id {r['image_id']}, which the ground truth lacks; "
                             f"evaluate on the same annotation json the images came from")
        if r["category_id"] not in cat_ids:
            raise ValueError(f"detection {r} has category_id {r['category_id']}, not one of {sorted(cat_ids)}; "
                             f"map class indices back with the dataset's category_ids")


def coco_metrics(gt_dataset: dict[str, Any], results: list[dict], *, backend: str = "faster_coco_eval",
                 image_ids: list[int] | None = None, names: list[str] | None = None) -> dict[str, Any]:
    """COCO bbox mAP of ``results`` against ``gt_dataset``.

    Args:
        gt_dataset: A COCO detection dict (e.g. ``dataset.coco.dataset``).
        results: COCO result records: ``image_id, category_id, bbox [x, y, w, h], score``.
        backend: ``faster_coco_eval`` or ``pycocotools``.
        image_ids: Evaluate only these images (default: all images of the ground truth).
        names: Class names in category-id order, for the per-class table.

    Returns:
        ``map50_95, map50, map75, ap_small, ap_medium, ap_large, ar1, ar10, ar100, ar_small,
        ar_medium, ar_large`` (floats), ``per_class`` (list of dicts), ``backend`` and
        ``metric_time_s``.
    """
    run = COCO_BACKENDS.get(backend)
    check_results(gt_dataset, results)
    start = time.perf_counter()
    stats, precision = run(gt_dataset, results, image_ids)
    elapsed = time.perf_counter() - start
    metrics: dict[str, Any] = {name: float(v) for name, v in zip(STAT_NAMES, stats, strict=True)}
    metrics["per_class"] = per_class_ap(precision, gt_dataset, image_ids, names)
    metrics.update(backend=backend, metric_time_s=elapsed)
    return metrics


def per_class_ap(precision: np.ndarray, gt_dataset: dict[str, Any], image_ids: list[int] | None,
                 names: list[str] | None) -> list[dict[str, Any]]:
    """AP50-95 and AP50 per category (all areas, 100 detections); -1 where it has no ground truth."""
    cats = sorted(gt_dataset["categories"], key=lambda c: c["id"])
    wanted = set(image_ids) if image_ids is not None else None
    n_gt = {c["id"]: 0 for c in cats}
    for ann in gt_dataset["annotations"]:
        if not ann.get("iscrowd") and (wanted is None or ann["image_id"] in wanted):
            n_gt[ann["category_id"]] += 1
    rows = []
    for k, cat in enumerate(cats):
        p = precision[:, :, k, 0, -1] if precision.size else np.full((1, 1), -1.0)
        rows.append({"class": k, "name": names[k] if names else str(cat["name"]), "category_id": cat["id"],
                     "n_gt": n_gt[cat["id"]], "ap50_95": _mean_valid(p), "ap50": _mean_valid(p[:1])})
    return rows


def _mean_valid(p: np.ndarray) -> float:
    valid = p[p > -1]
    return float(valid.mean()) if valid.size else -1.0
