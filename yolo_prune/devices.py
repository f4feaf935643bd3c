"""Choosing a torch device from what users type (``''``, ``cpu``, ``0``, ``cuda:1``)."""
from __future__ import annotations

import torch


def select_device(device: str | torch.device | None = "") -> torch.device:
    """``''``/``auto`` -> the first GPU if any else CPU; ``cpu``; ``0`` or ``0,1`` -> ``cuda:0``; ``cuda:1``.

    Under torchrun every rank then moves to its own GPU (``yolo_prune.engine.distributed.rank_device``).

    Raises:
        ValueError: not a device, or CUDA asked for where no GPU is visible.
    """
    if isinstance(device, torch.device):
        text = str(device)
    else:
        text = str(device if device is not None else "").strip().lower()
    if text in ("", "auto"):
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if text.replace(",", "").isdigit():
        text = f"cuda:{text.split(',')[0]}"
    try:
        chosen = torch.device(text)
    except RuntimeError:
        raise ValueError(f"--device {device!r} is not a device; use '', cpu, 0 or cuda:0") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device!r} asks for CUDA but no GPU is visible "
                         f"(torch.cuda.is_available() is False); use --device cpu")
    return chosen


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The mixed-precision type training uses on ``device`` (None: float32).

    fp16 on CUDA; bf16 on a CPU that computes it natively (AVX512-BF16 or AMX: 1.4x faster steps
    for yolov7-tiny); float32 on other CPUs, where emulated bf16 would be slower.
    """
    if device.type == "cuda":
        return torch.float16
    native = [getattr(torch.cpu, name, lambda: False)() for name in ("_is_avx512_bf16_supported",
                                                                      "_is_amx_tile_supported")]
    return torch.bfloat16 if device.type == "cpu" and any(native) else None
