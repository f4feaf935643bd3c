"""Every default of the latency benchmark (``measure_latency``, ``yolo_prune.benchmark``) in one place."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from yolo_prune.settings import IMG_SIZE, JobSettings


@dataclass
class BenchmarkSettings(JobSettings):
    """How latency is measured (see ``yolo_prune.benchmark.latency``).

    Attributes:
        img_size: Square input side, in pixels.
        batch: Images per timed run.
        device: Torch device of the measurement.
        half: fp16 model and input (CUDA only).
        warmup: Untimed runs first (allocator, cuDNN autotune, caches).
        runs: Timed runs (the median is reported).
        threads: torch intra-op threads during the measurement (None: leave as is).
        nms: Also time decoding + NMS.
        conf_thres: NMS confidence threshold (a deployment value, not the mAP one).
        iou_thres: NMS IoU threshold.
        max_det: Detections kept per image.
        channels_last: Run convolutions in NHWC memory format, as deployments do.
    """

    img_size: int = IMG_SIZE
    batch: int = 1
    device: str = "cpu"
    half: bool = False
    warmup: int = 5
    runs: int = 20
    threads: int | None = None
    nms: bool = True
    conf_thres: float = 0.25
    iou_thres: float = 0.45
    max_det: int = 300
    channels_last: bool = True

    def latency_kwargs(self) -> dict[str, Any]:
        """``measure_latency`` keyword arguments (everything but ``img_size``)."""
        return {k: v for k, v in self.to_dict().items() if k != "img_size"}


DEFAULTS = BenchmarkSettings()
