"""Which deployment runtimes can run on this machine, and one line saying what is missing when not."""
from __future__ import annotations

import importlib.util

import torch

RUNTIMES = ("torch", "onnxruntime", "openvino", "tensorrt")


def missing_runtime(runtime: str) -> str | None:
    """None when ``runtime`` can run here, else one line saying what is missing and what to do."""
    if runtime not in RUNTIMES:
        return f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}"
    if runtime == "torch":
        return None
    if runtime == "tensorrt":
        if not torch.cuda.is_available():
            return "TensorRT needs an NVIDIA GPU with CUDA, and this machine has none; export onnx or openvino here"
        if importlib.util.find_spec("tensorrt") is None:
            return "TensorRT is not installed; pip install tensorrt (on a machine with CUDA) or export onnx"
        return None
    if importlib.util.find_spec(runtime) is None:
        extra = "onnxruntime" if runtime == "onnxruntime" else "openvino (pip install 'yolo-prune[deploy]')"
        return f"the {runtime} package is not installed; pip install {extra}"
    return None


def require_runtime(runtime: str) -> None:
    """Raises ``RuntimeError`` with ``missing_runtime``'s line when ``runtime`` cannot run here."""
    reason = missing_runtime(runtime)
    if reason:
        raise RuntimeError(reason)
