"""Latency and FPS that say what they include.

One timed run processes a batch of synthetic camera frames through three stages, each timed
on its own (CUDA synchronised before every clock read):

* ``preprocess``: letterbox each uint8 frame to the input size, to a CHW tensor, stack, move
  to the device, convert to float / 255 (fp16 with ``half``);
* ``inference``: the model's forward pass (the fused model when ``fuse`` is given);
* ``nms``: decoding to ``[B, N, 5 + nc]`` and ``non_max_suppression``.

Convolutions run in NHWC memory format (``channels_last``, input and conv weights) by default,
as deployments do: on CPU it avoids oneDNN's per-layer layout reorders, whose cost grows with
activations, not MACs, and so hides much of a pruned model's gain.

All times are per image (a run's time / batch). ``latency_ms_*`` and ``fps`` are the inference
stage alone (what pruning changes); ``end_to_end_ms_*`` and ``fps_end_to_end`` are the sum of
the three. Medians and 10th / 90th percentiles are taken over ``runs`` runs after ``warmup``.
"""
from __future__ import annotations

import contextlib
import copy
import platform
import time
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from yolo_prune.benchmark.settings import DEFAULTS
from yolo_prune.data.transforms import letterbox
from yolo_prune.devices import select_device
from yolo_prune.evaluation.evaluator import first_output
from yolo_prune.evaluation.nms import non_max_suppression

STAGES = ("preprocess", "inference", "nms")


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Temporarily sets torch's intra-op thread count; yields the count in effect."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def _frames(batch: int, img_size: int, source_shape: tuple[int, int] | None, seed: int = 0) -> list[np.ndarray]:
    h, w = source_shape or (round(img_size * 3 / 4), img_size)  # a 4:3 camera frame by default
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(batch)]


class _Pipeline:
    """The three timed stages around one prepared model."""

    def __init__(self, model: nn.Module, img_size: int, device: torch.device, half: bool,
                 decode: Callable[[Any], Any], nms_kwargs: dict | None, channels_last: bool) -> None:
        self.model, self.img_size, self.device, self.half = model, img_size, device, half
        self.decode, self.nms_kwargs, self.channels_last = decode, nms_kwargs, channels_last

    def _sync(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def preprocess(self, frames: Sequence[np.ndarray]) -> torch.Tensor:
        imgs = [letterbox(f, self.img_size, auto=False)[0][:, :, ::-1].transpose(2, 0, 1) for f in frames]
        x = torch.from_numpy(np.ascontiguousarray(np.stack(imgs))).to(self.device)
        x = (x.half() if self.half else x.float()) / 255.0
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @torch.inference_mode()
    def run(self, frames: Sequence[np.ndarray]) -> dict[str, float]:
        """Seconds per stage for one batch."""
        t0 = self._sync()
        x = self.preprocess(frames)
        t1 = self._sync()
        out = self.model(x)
        t2 = self._sync()
        if self.nms_kwargs is not None:
            non_max_suppression(self.decode(out), **self.nms_kwargs)
        t3 = self._sync()
        return {"preprocess": t1 - t0, "inference": t2 - t1, "nms": t3 - t2}


def _summary(samples: dict[str, list[float]], batch: int, with_nms: bool) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    per_image = {k: np.asarray(v) * 1000 / batch for k, v in samples.items()}
    per_image["end_to_end"] = sum(per_image[k] for k in STAGES)
    for stage, ms in per_image.items():
        if stage == "nms" and not with_nms:
            out.update(nms_ms_median=None, nms_ms_p10=None, nms_ms_p90=None)
            continue
        name = "latency" if stage == "inference" else stage
        p10, med, p90 = np.percentile(ms, [10, 50, 90])
        out.update({f"{name}_ms_median": float(med), f"{name}_ms_p10": float(p10), f"{name}_ms_p90": float(p90)})
    out["fps"] = 1000.0 / out["latency_ms_median"] if out["latency_ms_median"] else float("inf")
    out["fps_end_to_end"] = 1000.0 / out["end_to_end_ms_median"] if out["end_to_end_ms_median"] else float("inf")
    return out


def measure_latency(model: nn.Module, img_size: int = DEFAULTS.img_size, *, batch: int = DEFAULTS.batch,
                    device: str | torch.device = DEFAULTS.device, half: bool = DEFAULTS.half,
                    warmup: int = DEFAULTS.warmup, runs: int = DEFAULTS.runs, threads: int | None = DEFAULTS.threads,
                    fuse: Callable[[nn.Module], nn.Module] | None = None, decode: Callable[[Any], Any] | None = None,
                    nms: bool = DEFAULTS.nms, conf_thres: float = DEFAULTS.conf_thres,
                    iou_thres: float = DEFAULTS.iou_thres, max_det: int = DEFAULTS.max_det,
                    source_shape: tuple[int, int] | None = None,
                    channels_last: bool = DEFAULTS.channels_last) -> dict[str, Any]:
    """Per-image latency of preprocess, inference and NMS of a fused / cast / moved copy of ``model``.

    Args:
        model: Detector taking ``[B, 3, img_size, img_size]`` floats in [0, 1].
        img_size: Square input side.
        batch: Images per run.
        device: Torch device.
        half: fp16 model and input (CUDA only).
        warmup: Untimed runs first (allocator, cuDNN autotune, caches).
        runs: Timed runs.
        threads: torch intra-op threads during the measurement (None: leave as is).
        fuse: Called on a copy of the model before timing (e.g. ``adapter.fuse``).
        decode: Output -> ``[B, N, 5 + nc]`` (e.g. ``adapter.decode``); None: ``first_output``.
        nms: Time decoding + NMS; False leaves the ``nms`` stage out (its fields are None).
        conf_thres: NMS confidence threshold (a deployment default, not the mAP one).
        iou_thres: NMS IoU threshold.
        max_det: Detections kept per image.
        source_shape: (h, w) of the synthetic frames; default a 4:3 frame, long side img_size.
        channels_last: Run convolutions in NHWC memory format, as deployments do (see the module docstring).

    Returns:
        ``latency_ms_median, latency_ms_p10, latency_ms_p90, fps`` (inference), the same for
        ``preprocess``, ``nms`` and ``end_to_end`` (+ ``fps_end_to_end``), and the conditions:
        ``batch, img_size, device, half, threads, warmup, runs, fused, includes``.
    """
    device = select_device(device)
    if half and device.type != "cuda":
        raise ValueError(f"half=True needs a CUDA device (got {device}); fp16 convolutions on CPU are not a "
                         f"meaningful speed figure")
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    nms_kwargs = {"conf_thres": conf_thres, "iou_thres": iou_thres, "max_det": max_det} if nms else None
    net = _prepared_copy(model, fuse, half, device, channels_last)
    pipeline = _Pipeline(net, img_size, device, half, decode or first_output, nms_kwargs, channels_last)
    samples, n_threads = _time_runs(pipeline, _frames(batch, img_size, source_shape), warmup, runs, threads)
    includes = {"latency": "model forward", "preprocess": "letterbox + to tensor + to device + /255",
                "nms": "decode + NMS" if nms else "not measured", "end_to_end": "preprocess + inference + nms"}
    return {**_summary(samples, batch, nms), "batch": batch, "img_size": img_size, "device": _device_name(device),
            "half": half, "threads": n_threads, "warmup": warmup, "runs": runs, "fused": fuse is not None,
            "channels_last": channels_last, "includes": includes, "nms_settings": nms_kwargs}


def _prepared_copy(model: nn.Module, fuse: Callable[[nn.Module], nn.Module] | None, half: bool,
                   device: torch.device, channels_last: bool) -> nn.Module:
    """A fused, cast, moved eval copy of ``model`` (the model itself is untouched)."""
    net = copy.deepcopy(model).eval()
    net = fuse(net) if fuse is not None else net
    net = (net.half() if half else net.float()).to(device).eval()
    return to_channels_last(net) if channels_last else net


def _time_runs(pipeline: _Pipeline, frames: list[np.ndarray], warmup: int, runs: int,
               threads: int | None) -> tuple[dict[str, list[float]], int]:
    """Seconds per stage of ``runs`` timed runs after ``warmup``; the thread count in effect."""
    samples: dict[str, list[float]] = {k: [] for k in STAGES}
    with torch_threads(threads) as n_threads:
        for _ in range(warmup):
            pipeline.run(frames)
        for _ in range(runs):
            for stage, seconds in pipeline.run(frames).items():
                samples[stage].append(seconds)
    return samples, n_threads


def to_channels_last(model: nn.Module) -> nn.Module:
    """Conv weights to NHWC in place.

    ``model.to(memory_format=...)`` fails on models that hold non-4D buffers, such as YOLO anchors.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)
    return model


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()})"


def benchmark_suite(model: nn.Module, img_size: int = DEFAULTS.img_size, *, batches: Sequence[int] = (1, 8),
                    device: str | torch.device = DEFAULTS.device, fuse: Callable[[nn.Module], nn.Module] | None = None,
                    **kwargs: Any) -> list[dict[str, Any]]:
    """``measure_latency`` at each batch size, in fp32 and (on CUDA) fp16."""
    device = select_device(device)
    precisions = (False, True) if device.type == "cuda" else (False,)
    return [measure_latency(model, img_size, batch=b, device=device, half=h, fuse=fuse, **kwargs)
            for h in precisions for b in batches]
