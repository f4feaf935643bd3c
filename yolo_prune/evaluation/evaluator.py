"""``evaluate``: batched inference -> NMS -> original-image boxes -> COCO results -> mAP.

The steps follow YOLOv7's ``test.py``: uint8 images become float in [0, 1] (fp16 on CUDA when
asked), NMS with conf 0.001 / IoU 0.65 / 300 detections and multi-label boxes, boxes scaled
back to each original image, class indices mapped back to COCO category ids, and the COCO
metrics computed by faster-coco-eval (or pycocotools).
"""
from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from tqdm import tqdm

from yolo_prune.data.errors import DataError
from yolo_prune.data.transforms import scale_boxes
from yolo_prune.devices import select_device
from yolo_prune.evaluation.coco_eval import coco_metrics
from yolo_prune.evaluation.nms import non_max_suppression
from yolo_prune.evaluation.settings import DEFAULTS
from yolo_prune.io.atomic import atomic_write_json
from yolo_prune.reporting import progress_off
from yolo_prune.settings import check_value

logger = logging.getLogger(__name__)
Decode = Callable[[Any], torch.Tensor]


def first_output(output: Any) -> torch.Tensor:
    """The default decode: the model already returns ``[B, N, 5 + nc]``, alone or first in a tuple.

    That is the layout ``non_max_suppression`` takes (YOLOv7's eval output ``(pred, maps)`` has it);
    other families pass their adapter's ``decode``.
    """
    return output[0] if isinstance(output, (tuple, list)) else output


class _Timer:
    """Per-stage wall time; synchronises CUDA so GPU work is charged to its own stage."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.totals, self._last = device, {}, time.perf_counter()

    def lap(self, stage: str) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.totals[stage] = self.totals.get(stage, 0.0) + now - self._last
        self._last = now


def detections_to_coco(det: torch.Tensor, image_id: int, img_shape: tuple[int, int], shapes: Any,
                       category_ids: list[int]) -> list[dict[str, Any]]:
    """One image's NMS output (letterboxed xyxy) -> COCO result records in original pixels."""
    if not len(det):
        return []
    boxes = scale_boxes(det[:, :4].float(), img_shape, shapes[0], shapes[1]).cpu().numpy()
    boxes[:, 2:] -= boxes[:, :2]  # xyxy -> xywh
    scores, classes = det[:, 4].float().cpu().numpy(), det[:, 5].long().cpu().numpy()
    return [{"image_id": int(image_id), "category_id": int(category_ids[c]),
             "bbox": [round(float(v), 3) for v in box], "score": round(float(s), 5)}
            for box, s, c in zip(boxes, scores, classes, strict=True)]


def _eval_loader(dataset: Any, batch_size: int, workers: int, max_images: int | None) -> tuple[Any, list[int]]:
    from yolo_prune.data.dataset import build_dataloader

    if len(dataset) == 0:
        raise DataError("the evaluation dataset has no images; check the val images folder and json")
    if getattr(dataset, "rect", False) and batch_size != dataset.batch_size:
        logger.info("rect dataset built for batch %d: evaluating with that batch size", dataset.batch_size)
        batch_size = dataset.batch_size  # its batch shapes fix which items share a batch
    n = len(dataset) if max_images is None else max(0, min(int(max_images), len(dataset)))
    subset = dataset if n == len(dataset) else torch.utils.data.Subset(dataset, range(n))
    image_ids = [dataset.image_ids[i] for i in range(n)] if hasattr(dataset, "image_ids") else None
    _check_ground_truth(dataset, image_ids)
    return build_dataloader(subset, batch_size, shuffle=False, workers=workers, seed=0), image_ids


def _check_ground_truth(dataset: Any, image_ids: list[int] | None) -> None:
    """COCO mAP without a single ground-truth box is -1, not a score: refuse before any inference."""
    annotations = dataset.coco.dataset.get("annotations", [])
    wanted = set(image_ids) if image_ids is not None else None
    if not any(not a.get("iscrowd") and (wanted is None or a["image_id"] in wanted) for a in annotations):
        raise DataError(f"the evaluation ground truth ({getattr(dataset, 'ann_file', 'the json')}) has no boxes on "
                        f"the {len(wanted) if wanted is not None else len(dataset)} images evaluated, so mAP is "
                        f"undefined; check the split's json (or --max-images)")


def _check_classes(pred: torch.Tensor, dataset: Any) -> None:
    if pred.ndim != 3:
        raise ValueError(f"decoded predictions must be [batch, boxes, 5 + classes], got {tuple(pred.shape)}; "
                         f"pass the adapter's decode (adapter.decode) for this model family")
    nc, data_nc = pred.shape[-1] - 5, len(dataset.category_ids)
    if nc != data_nc:
        raise DataError(f"the model predicts {nc} classes but the dataset has {data_nc} ({dataset.names[:5]}...); "
                        f"evaluate a model trained for this dataset, or fine-tune one with --data")


@torch.inference_mode()
def predict(model: nn.Module, loader: Any, dataset: Any, *, decode: Decode, device: torch.device, half: bool,
            conf_thres: float, iou_thres: float, max_det: int) -> tuple[list[dict], list[int], dict[str, float]]:
    """Runs the model over ``loader``; returns COCO results, the image ids seen, and stage times (s)."""
    results: list[dict] = []
    seen: list[int] = []
    timer = _Timer(device)
    # a bar on terminals only (disable=None): logs, CI and --quiet (TQDM_DISABLE) stay clean
    for imgs, _, image_ids, shapes in tqdm(loader, desc="evaluating", unit="batch", leave=False, disable=progress_off() or None):
        timer.lap("data")
        imgs = imgs.to(device, non_blocking=True)
        imgs = (imgs.half() if half else imgs.float()) / 255.0
        timer.lap("preprocess")
        pred = decode(model(imgs))
        timer.lap("inference")
        if not seen:
            _check_classes(pred, dataset)
        dets = non_max_suppression(pred, conf_thres, iou_thres, max_det=max_det)
        timer.lap("nms")
        for det, image_id, shape in zip(dets, image_ids, shapes, strict=True):
            if shape is None:
                raise DataError("evaluation needs an un-augmented dataset (augment=False): items have no "
                                "inverse letterbox mapping")
            results.extend(detections_to_coco(det, image_id, tuple(imgs.shape[2:]), shape, dataset.category_ids))
        seen.extend(int(i) for i in image_ids)
        timer.lap("postprocess")
    return results, seen, timer.totals


def evaluate(model: nn.Module, dataset: Any, *, decode: Decode | None = None, batch_size: int = DEFAULTS.batch_size,
             conf_thres: float = DEFAULTS.conf_thres, iou_thres: float = DEFAULTS.iou_thres,
             max_det: int = DEFAULTS.max_det, device: str | torch.device = DEFAULTS.device, half: bool = DEFAULTS.half,
             backend: str = DEFAULTS.backend, workers: int = DEFAULTS.workers, max_images: int | None = None,
             results_path: str | Path | None = None) -> dict[str, Any]:
    """COCO mAP of ``model`` on ``dataset`` (a ``CocoDetectionDataset`` with ``augment=False``).

    Args:
        model: Detector; moved to ``device`` and run in eval mode (its mode is restored after).
        dataset: Evaluation dataset; rect datasets are read with the batch size they were built for.
        decode: Model output -> ``[B, N, 5 + nc]`` (``adapter.decode``); None: ``first_output``.
        batch_size: Images per forward pass.
        conf_thres: NMS confidence threshold (YOLOv7 ``test.py`` defaults, see ``EvalSettings``).
        iou_thres: NMS IoU threshold.
        max_det: Detections kept per image.
        device: Torch device (``''``: GPU if any, else CPU).
        half: fp16 inference on CUDA (a half copy of the model; ignored on CPU).
        backend: ``faster_coco_eval`` or ``pycocotools``.
        workers: Data loader processes.
        max_images: Evaluate only the first N items (ground truth restricted to them).
        results_path: Also write the COCO results json here.

    Returns:
        ``map50_95, map50, map75, ap_small, ap_medium, ap_large`` (and AR), ``per_class``,
        ``speed_ms`` (per image: data, preprocess, inference, nms, postprocess), ``images_per_s``,
        ``n_images``, ``n_detections``, ``metric_time_s`` and ``settings``.
    """
    for name, value in (("conf_thres", conf_thres), ("iou_thres", iou_thres), ("max_det", max_det)):
        check_value(name, value)  # a NaN threshold would silently keep no detection
    device = select_device(device)
    if half and device.type != "cuda":
        logger.warning("half=True needs CUDA; evaluating in fp32 on %s", device)
        half = False
    loader, image_ids = _eval_loader(dataset, batch_size, workers, max_images)
    nms = {"conf_thres": conf_thres, "iou_thres": iou_thres, "max_det": max_det}
    results, seen, stage_s, wall_s = _predict_all(model, loader, dataset, decode=decode or first_output,
                                                  device=device, half=half, nms=nms)
    if results_path is not None:
        atomic_write_json(results, results_path)
    metrics = coco_metrics(dataset.coco.dataset, results, backend=backend, image_ids=image_ids or seen,
                           names=list(dataset.names))
    n = max(len(seen), 1)
    metrics.update(
        speed_ms={k: 1000 * v / n for k, v in stage_s.items()}, images_per_s=len(seen) / wall_s if wall_s else 0.0,
        n_images=len(seen), n_detections=len(results),
        settings={"batch_size": loader.batch_size, **nms, "device": str(device), "half": half, "backend": backend,
                  "multi_label": True, "img_shape_rect": bool(getattr(dataset, "rect", False)),
                  "img_size": getattr(dataset, "img_size", None)})
    return metrics


def _predict_all(model: nn.Module, loader: Any, dataset: Any, *, decode: Decode, device: torch.device, half: bool,
                 nms: dict[str, Any]) -> tuple[list[dict], list[int], dict[str, float], float]:
    """``predict`` on an eval-mode (half) copy; the caller's model keeps its mode. Adds the wall time."""
    was_training = model.training
    net = (copy.deepcopy(model).half() if half else model).to(device).eval()
    start = time.perf_counter()
    try:
        results, seen, stage_s = predict(net, loader, dataset, decode=decode, device=device, half=half, **nms)
    finally:
        model.train(was_training)
    return results, seen, stage_s, time.perf_counter() - start
