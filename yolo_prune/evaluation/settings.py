"""Every default of the evaluation job (``yolo-prune eval``, ``yolo_prune.evaluate``) in one place."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from yolo_prune.settings import IMG_SIZE, ModelSourceSettings


@dataclass
class EvalSettings(ModelSourceSettings):
    """Resolved settings of one evaluation (written next to its metrics JSON).

    Attributes:
        data: Data yaml of a COCO-format dataset (or ``ann`` + ``images``).
        split: Split of ``data`` to evaluate.
        ann: COCO annotation json (instead of ``data``).
        images: Image folder of ``ann``.
        img_size: Long side of the letterboxed inputs, in pixels.
        batch_size: Images per forward pass.
        conf_thres: NMS confidence threshold (YOLOv7 ``test.py``: 0.001).
        iou_thres: NMS IoU threshold.
        max_det: Detections kept per image.
        device: ``''`` (GPU if any, else CPU), ``cpu``, ``0``, ``cuda:1``.
        half: fp16 inference (CUDA only).
        backend: COCO metric backend (``faster_coco_eval`` or ``pycocotools``).
        workers: Data-loading processes.
        max_images: Evaluate only the first N images (None: all).
        fuse: Evaluate the fused model (Conv+BN folded), as deployed.
        bench_runs: Timed runs of the latency benchmark after the mAP (0: skip it).
        out: Metrics JSON path (None: beside ``weights``, ``*-eval.json``).
        save_results: Also write the COCO detections json here.
    """

    data: Path | None = None
    split: str = "val"
    ann: Path | None = None
    images: Path | None = None
    img_size: int = IMG_SIZE
    batch_size: int = 16
    conf_thres: float = 0.001
    iou_thres: float = 0.65
    max_det: int = 300
    device: str = ""
    half: bool = False
    backend: str = "faster_coco_eval"
    workers: int = 2
    max_images: int | None = None
    fuse: bool = True
    bench_runs: int = 20
    out: Path | None = None
    save_results: Path | None = None


DEFAULTS = EvalSettings()
