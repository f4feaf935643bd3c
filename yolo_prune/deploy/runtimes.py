"""One runner per deployment runtime: ``runner(images) -> outputs``, all in numpy.

A runner takes a float ``[B, 3, H, W]`` array in 0..1 and returns the exported graph's single
output as float32 (``[B, N, 5 + nc]`` predictions, or ``[K, 7]`` detections for graphs with NMS
inside). The same runners serve export verification, ``predict`` on exported files and the
A/B latency benchmark, so what is checked is what is timed.

Runtime settings chosen here, and why:

* ONNX Runtime: every graph optimisation (``ORT_ENABLE_ALL``: constant folding, Conv+activation
  fusion and the NCHWc blocked layout, whose reorders sit only at the graph's edges), sequential
  execution, one inter-op thread, and **no spin-waiting** of the intra-op threads. Spinning
  (ORT's default) makes each idle worker burn its core for a while after every operator; when
  the machine has no core to spare this costs a fixed time per operator, not per MAC, so a
  pruned model (same operators, fewer MACs) loses most of its gain: measured on this 2-core
  machine, yolov7 at 640 gave 2.8x with spinning and 3.6x without for 3.9x fewer MACs.
* OpenVINO: the latency hint, one stream, ``threads`` inference threads, fp32 precision hint
  (a bf16-capable CPU would otherwise silently run in bf16).
* torch: eager, fused, channels_last (NHWC) convolutions, ``threads`` intra-op threads.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from yolo_prune.benchmark.latency import to_channels_last, torch_threads
from yolo_prune.deploy.availability import RUNTIMES, missing_runtime, require_runtime  # noqa: F401  (re-exported)

LOGGER = logging.getLogger(__name__)

ORT_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


class Runner(Protocol):
    """What every runtime's runner offers."""

    runtime: str
    threads: int | None

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Float ``[B, 3, H, W]`` in 0..1 -> the graph's output as float32."""


def default_threads() -> int:
    """The CPU cores this process may use (its affinity mask, not the machine's core count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class OnnxRuntimeRunner:
    """An ONNX Runtime CPU session with the settings of the module docstring."""

    runtime = "onnxruntime"

    def __init__(self, path: str | Path, *, threads: int | None = None, optimization: str = "all",
                 spinning: bool = False) -> None:
        require_runtime("onnxruntime")
        import onnxruntime as ort

        if optimization not in ORT_OPTIMIZATION_LEVELS:
            raise ValueError(f"ONNX Runtime optimisation {optimization!r} is unknown; "
                             f"choose one of {', '.join(ORT_OPTIMIZATION_LEVELS)}")
        levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                  "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                  "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                  "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
        self.threads = threads or default_threads()
        self.settings = {"graph_optimization": optimization, "intra_op_spinning": spinning,
                         "execution_mode": "sequential", "inter_op_threads": 1}
        options = ort.SessionOptions()
        options.graph_optimization_level = levels[optimization]
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # warnings about unused initialisers are noise here
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "1" if spinning else "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name, self.input_shape = inp.name, inp.shape
        self.input_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Float ``[B, 3, H, W]`` in 0..1 -> the graph's output as float32."""
        out = self.session.run(None, {self.input_name: images.astype(self.input_dtype, copy=False)})[0]
        return out.astype(np.float32, copy=False)


class OpenVINORunner:
    """An OpenVINO CPU model compiled from ``.xml`` IR or ``.onnx``."""

    runtime = "openvino"

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        require_runtime("openvino")
        import openvino as ov

        self.threads = threads or default_threads()
        self.settings = {"performance_hint": "LATENCY", "num_streams": 1, "inference_precision": "f32"}
        config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": str(self.threads),
                  "INFERENCE_PRECISION_HINT": "f32"}
        self.compiled = ov.Core().compile_model(str(path), "CPU", config)
        self.request = self.compiled.create_infer_request()
        inp = self.compiled.inputs[0]
        self.input_shape = list(inp.get_partial_shape().to_string().strip("[]").split(","))
        self.input_dtype = np.float16 if inp.get_element_type().get_type_name() == "f16" else np.float32

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Float ``[B, 3, H, W]`` in 0..1 -> the graph's output as float32."""
        self.request.infer({0: images.astype(self.input_dtype, copy=False)})
        return np.asarray(self.request.get_output_tensor(0).data, dtype=np.float32).copy()


class TorchRunner:
    """Eager PyTorch on a prepared (fused, decoded) module; NHWC convolutions by default."""

    runtime = "torch"

    def __init__(self, module: nn.Module, *, threads: int | None = None, device: str | torch.device = "cpu",
                 channels_last: bool = True, half: bool = False) -> None:
        self.device = torch.device(device)
        if half and self.device.type != "cuda":
            raise ValueError(f"half=True needs a CUDA device (got {self.device}); use fp32 on CPU")
        self.module = (module.half() if half else module.float()).to(self.device).eval()
        self.channels_last, self.half = channels_last, half
        if channels_last:
            to_channels_last(self.module)
        self.threads = threads or default_threads()
        self.settings = {"channels_last": channels_last, "device": str(self.device), "half": half}

    @torch.inference_mode()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Float ``[B, 3, H, W]`` in 0..1 -> the graph's output as float32."""
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device)
        x = x.half() if self.half else x.float()
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch_threads(self.threads):
            out = self.module(x)
        return out.float().cpu().numpy()

    def synchronize(self) -> None:
        """Waits for queued GPU work (a no-op on CPU), so wall-clock timing is honest."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def make_runner(runtime: str, model: nn.Module | str | Path, *, threads: int | None = None,
                device: str | torch.device = "cpu", **settings: Any) -> Runner:
    """The runner of ``runtime`` for a prepared module (torch) or an exported file (the others).

    Raises:
        RuntimeError: the runtime is missing here (the message says what to install).
        ValueError: ``model`` is the wrong kind of thing for ``runtime``.
    """
    require_runtime(runtime)
    if runtime == "torch":
        if not isinstance(model, nn.Module):
            raise ValueError(f"the torch runtime runs a loaded model, not the file {model}; load it first")
        return TorchRunner(model, threads=threads, device=device, **settings)
    if isinstance(model, nn.Module):
        raise ValueError(f"the {runtime} runtime runs an exported file; export the model first (yolo-prune export)")
    path = Path(model)
    if not path.is_file():
        raise FileNotFoundError(f"exported model {str(path)!r} does not exist; check the path")
    if runtime == "onnxruntime":
        return OnnxRuntimeRunner(path, threads=threads, **settings)
    if runtime == "openvino":
        return OpenVINORunner(path, threads=threads, **settings)
    from yolo_prune.deploy.tensorrt import TensorRTRunner

    return TensorRTRunner(path)
