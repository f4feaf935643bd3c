"""TensorRT engines built from the exported ONNX graph (only where CUDA and TensorRT exist).

Written against the TensorRT >= 10 Python API (named I/O tensors, ``execute_async_v3``); torch
CUDA tensors serve as the device buffers, so no extra CUDA binding package is needed. The
project's own machines have no GPU: this path is exercised only where one is present.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from yolo_prune.deploy.availability import require_runtime
from yolo_prune.io.atomic import atomic_path

LOGGER = logging.getLogger(__name__)
_WORKSPACE_BYTES = 4 << 30


def build_engine(onnx_path: str | Path, engine_path: str | Path, *, half: bool = False,
                 batch_range: tuple[int, int, int] | None = None) -> Path:
    """Parses ``onnx_path`` and writes a serialised engine atomically to ``engine_path``.

    Args:
        onnx_path: The exported graph.
        engine_path: The ``.engine`` to write.
        half: Allow fp16 kernels.
        batch_range: (min, opt, max) batch of a dynamic-batch graph.

    Raises:
        RuntimeError: no CUDA / TensorRT here, or TensorRT could not parse or build the graph.
    """
    require_runtime("tensorrt")
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, _WORKSPACE_BYTES)
    if half:
        config.set_flag(trt.BuilderFlag.FP16)
    if batch_range is not None:
        inp = network.get_input(0)
        _, c, h, w = inp.shape
        profile = builder.create_optimization_profile()
        profile.set_shape(inp.name, *[(b, c, h, w) for b in batch_range])
        config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}; see its log above")
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(bytes(engine))
    return Path(engine_path)


class TensorRTRunner:
    """Runs a serialised engine on the first GPU; numpy in, numpy out (one input, one output)."""

    runtime = "tensorrt"
    threads = None

    def __init__(self, path: str | Path) -> None:
        require_runtime("tensorrt")
        import tensorrt as trt

        self._trt = trt
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(Path(path).read_bytes())
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self.settings = {"device": torch.cuda.get_device_name(0)}

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Float ``[B, 3, H, W]`` in 0..1 -> the graph's output as float32."""
        trt = self._trt
        dtype = torch.float16 if self.engine.get_tensor_dtype(self.input_name) == trt.DataType.HALF else torch.float32
        x = torch.from_numpy(np.ascontiguousarray(images)).to("cuda", dtype)
        self.context.set_input_shape(self.input_name, tuple(x.shape))
        shape = tuple(self.context.get_tensor_shape(self.output_name))
        if any(d < 0 for d in shape):
            raise RuntimeError("this engine's output size depends on the data (NMS inside); run it without --nms "
                               "for TensorRT, or use ONNX Runtime / OpenVINO for end-to-end graphs")
        half_out = self.engine.get_tensor_dtype(self.output_name) == trt.DataType.HALF
        out_dtype = torch.float16 if half_out else torch.float32
        out = torch.empty(shape, dtype=out_dtype, device="cuda")
        self.context.set_tensor_address(self.input_name, x.data_ptr())
        self.context.set_tensor_address(self.output_name, out.data_ptr())
        stream = torch.cuda.current_stream()
        self.context.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
        return out.float().cpu().numpy()
