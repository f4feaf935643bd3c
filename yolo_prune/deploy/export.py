"""Export a (pruned) detector to ONNX, OpenVINO IR or a TensorRT engine, and prove it matches.

Every export goes through ONNX: the fused model, wrapped by its adapter's ``export_module``
(and ``EndToEndDetector`` when NMS goes inside), is traced by PyTorch's **legacy TorchScript
exporter** (``torch.onnx.export(..., dynamo=False)``), chosen deliberately:

* the dynamo exporter needs ``onnxscript``, which this toolkit does not pin, and it re-traces
  the model through ``torch.export``, where the heads' Python-side caches (YOLOv7's ``grid``,
  Ultralytics' anchors) and shape-dependent branches need rewriting;
* the legacy exporter records one concrete pass, which is exactly the deployed computation, and
  it honours ``symbolic`` on ``torch.autograd.Function``, which places ONNX ``NonMaxSuppression``
  in the graph.

The graph is then simplified with onnxslim (constant folding, dead nodes, shape
simplification), optionally cast to fp16, and tagged with metadata (class names, stride, input
size, output layout) so ``predict`` can run the file alone. OpenVINO IR and TensorRT engines
are converted from that ONNX file.

Verification runs the PyTorch module and the exported file on random noise and on real
images (yours, or a synthetic scene) and prints the largest absolute difference in boxes
(pixels) and in scores; either beyond ``tolerance`` (fraction of the input size for boxes,
absolute for scores) raises ``ExportMismatchError``.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from yolo_prune.adapters.base import LoadedModel, get_adapter
from yolo_prune.deploy.graph import DETECTIONS_COLUMNS, EndToEndDetector
from yolo_prune.deploy.runtimes import default_threads, make_runner, require_runtime
from yolo_prune.io.atomic import atomic_path
from yolo_prune.settings import IMG_SIZE

LOGGER = logging.getLogger(__name__)

EXPORT_FORMATS = {"onnx": ".onnx", "openvino": ".xml", "tensorrt": ".engine"}
FORMAT_RUNTIME = {"onnx": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt"}
DEFAULT_OPSET = 17
MIN_OPSET = 11  # NonMaxSuppression, Resize with the modes YOLO upsampling uses
METADATA_KEY = "yolo_prune"
# default verification tolerance: boxes as a fraction of the input side, scores absolute
TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2}


class ExportMismatchError(RuntimeError):
    """The exported model's output differs from PyTorch's beyond the tolerance."""


@dataclass
class ExportCheck:
    """One verification input: how far the exported model is from PyTorch."""

    input: str
    runtime: str
    batch: int
    max_abs_diff_boxes_px: float
    max_abs_diff_scores: float
    tolerance: float
    passed: bool
    detections_torch: int | None = None  # graphs with NMS: detections found by each side
    detections_export: int | None = None


@dataclass
class ExportResult:
    """What ``export_model`` wrote and how it compared with PyTorch."""

    path: Path
    format: str
    onnx_path: Path
    checks: list[ExportCheck] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True when every check is within its tolerance."""
        return all(c.passed for c in self.checks)

    def summary(self) -> dict[str, Any]:
        """JSON-ready: paths, settings and every check."""
        return {"path": str(self.path), "format": self.format, "onnx_path": str(self.onnx_path),
                "passed": self.passed, "settings": self.settings, "checks": [asdict(c) for c in self.checks]}


def export_module(loaded: LoadedModel, *, nms: bool = False, conf_thres: float = 0.25, iou_thres: float = 0.45,
                  max_det: int = 100) -> nn.Module:
    """The module that is traced: a fused eval copy of ``loaded.model`` in its adapter's export form.

    ``loaded`` is not changed. With ``nms`` the output is ``detections [K, 7]`` (see
    ``yolo_prune.deploy.graph``), else ``predictions [B, N, 5 + nc]``.
    """
    adapter = get_adapter(loaded.family)
    fused = adapter.fuse(copy.deepcopy(loaded.model).float().cpu().eval())
    module = adapter.export_module(fused)
    if nms:
        module = EndToEndDetector(module, conf_thres=conf_thres, iou_thres=iou_thres, max_det=max_det)
    return module.eval()


def output_layout(nms: bool, nc: int) -> dict[str, Any]:
    """The exported graph's output, described for its metadata and for ``predict``."""
    if nms:
        return {"name": "detections", "shape": "[K, 7]", "columns": list(DETECTIONS_COLUMNS)}
    return {"name": "predictions", "shape": f"[B, N, {5 + nc}]", "columns": ["cx", "cy", "w", "h", "objectness",
                                                                              f"class_0..class_{nc - 1}"]}


def write_onnx(module: nn.Module, path: str | Path, *, img_size: int, batch: int = 1, dynamic_batch: bool = False,
               opset: int = DEFAULT_OPSET, simplify: bool = True, half: bool = False,
               metadata: dict[str, Any] | None = None) -> Path:
    """Traces ``module`` with the legacy exporter and writes the (simplified) graph atomically.

    Args:
        module: Images ``[B, 3, img_size, img_size]`` -> one tensor (``export_module``).
        path: The ``.onnx`` file to write.
        img_size: Input side (the graph's height and width are fixed).
        batch: The traced batch (and the graph's batch unless ``dynamic_batch``).
        dynamic_batch: Leave the batch dimension free.
        opset: ONNX opset (``MIN_OPSET`` or newer).
        simplify: Run onnxslim.
        half: Trace in fp16: inputs, weights, activations and outputs are fp16.
        metadata: Written as JSON under the model property ``yolo_prune``.
    """
    import onnx

    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is too old for these graphs; use --opset {MIN_OPSET} or newer")
    output_name = "detections" if isinstance(module, EndToEndDetector) else "predictions"
    dynamic_axes = {"images": {0: "batch"}, output_name: {0: "batch" if output_name == "predictions" else "num_det"}}
    if not dynamic_batch and output_name == "predictions":
        dynamic_axes = None
    dtype = torch.float16 if half else torch.float32
    if half:  # traced in fp16 (torch runs fp16 convolutions on CPU): inputs, weights and outputs are fp16
        module = copy.deepcopy(module).half()
    with tempfile.TemporaryDirectory(dir=Path(path).parent if Path(path).parent.exists() else None) as tmp:
        traced = Path(tmp) / "traced.onnx"
        with warnings.catch_warnings():  # the tracer warns about every Python-side shape check
            warnings.simplefilter("ignore")
            example = torch.rand(batch, 3, img_size, img_size, dtype=dtype)
            torch.onnx.export(module, (example,), str(traced), dynamo=False,
                              opset_version=opset, input_names=["images"], output_names=[output_name],
                              dynamic_axes=dynamic_axes, do_constant_folding=True)
        model = onnx.load(str(traced))
    if simplify:
        model = _slim(model)
    onnx.helper.set_model_props(model, {METADATA_KEY: json.dumps(metadata or {})})
    onnx.checker.check_model(model)
    with atomic_path(path) as tmp_path:
        onnx.save(model, str(tmp_path))
    return Path(path)


def _slim(model: Any) -> Any:
    import onnxslim

    slimmed = onnxslim.slim(model)
    if slimmed is None:
        raise RuntimeError("onnxslim could not simplify the graph; export with --no-simplify")
    return slimmed


def write_openvino(onnx_path: str | Path, xml_path: str | Path, *, half: bool = False,
                   metadata: dict[str, Any] | None = None) -> Path:
    """Converts ``onnx_path`` to OpenVINO IR (``.xml`` + ``.bin``), both files replaced atomically."""
    require_runtime("openvino")
    import openvino as ov

    xml_path = Path(xml_path)
    model = ov.convert_model(str(onnx_path))
    model.set_rt_info(json.dumps(metadata or {}), [METADATA_KEY])
    with tempfile.TemporaryDirectory(dir=xml_path.parent) as tmp:
        staged = Path(tmp) / xml_path.name
        ov.save_model(model, str(staged), compress_to_fp16=half)
        os.replace(staged.with_suffix(".bin"), xml_path.with_suffix(".bin"))  # weights first: the xml names them
        os.replace(staged, xml_path)
    return xml_path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``yolo_prune`` metadata of an exported ``.onnx`` or ``.xml`` ({} when there is none)."""
    path = Path(path)
    if path.suffix == ".xml":
        require_runtime("openvino")
        import openvino as ov

        model = ov.Core().read_model(str(path))
        return json.loads(model.get_rt_info([METADATA_KEY]).astype(str)) if model.has_rt_info([METADATA_KEY]) else {}
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return json.loads(props[METADATA_KEY]) if METADATA_KEY in props else {}


def export_model(loaded: LoadedModel, path: str | Path, *, format: str = "onnx", img_size: int = IMG_SIZE,
                 batch: int = 1, dynamic_batch: bool = False, opset: int = DEFAULT_OPSET, simplify: bool = True,
                 half: bool = False, nms: bool = False, conf_thres: float = 0.25, iou_thres: float = 0.45,
                 max_det: int = 100, verify: bool = True, verify_images: Sequence[str | Path] = (),
                 tolerance: float | None = None, threads: int | None = None) -> ExportResult:
    """Exports ``loaded`` and (by default) checks the file against PyTorch.

    Args:
        loaded: The model (not changed: a fused copy is exported).
        path: Output file; its suffix must suit ``format`` (``.onnx``, ``.xml``, ``.engine``). The
            ONNX graph of the other formats is written beside it.
        format: ``onnx``, ``openvino`` or ``tensorrt``.
        img_size: Square input side, a multiple of the model's largest stride.
        batch: Images per forward (see ``write_onnx``).
        dynamic_batch: A dynamic batch axis (see ``write_onnx``).
        opset: ONNX opset.
        simplify: Simplify the graph with onnxslim.
        half: fp16 weights and activations.
        nms: Put NMS in the graph (output ``detections [K, 7]``).
        conf_thres: NMS score threshold (with ``nms``).
        iou_thres: NMS IoU threshold (with ``nms``).
        max_det: Most detections per image (with ``nms``).
        verify: Compare with PyTorch on random noise and on ``verify_images``.
        verify_images: Real images to compare on (a synthetic scene when none are given).
        tolerance: Largest accepted difference (see module docstring); default by precision.
        threads: Runtime threads during verification.

    Raises:
        ExportMismatchError: the export disagrees with PyTorch beyond ``tolerance``.
        RuntimeError: the format's runtime is missing here.
        ValueError: a setting is out of range (the message names it).
    """
    path = _check_export_args(loaded, Path(path), format, img_size, batch)  # and a missing TensorRT, before tracing
    module = export_module(loaded, nms=nms, conf_thres=conf_thres, iou_thres=iou_thres, max_det=max_det)
    settings = {"format": format, "img_size": img_size, "batch": batch, "dynamic_batch": dynamic_batch,
                "opset": opset, "simplify": simplify, "half": half, "nms": nms,
                "exporter": "torch.onnx legacy (dynamo=False)", **({"conf_thres": conf_thres, "iou_thres": iou_thres,
                                                                    "max_det": max_det} if nms else {})}
    metadata, onnx_path = _metadata(loaded, img_size, nms, settings), path.with_suffix(".onnx")
    write_onnx(module, onnx_path, img_size=img_size, batch=batch, dynamic_batch=dynamic_batch, opset=opset,
               simplify=simplify, half=half, metadata=metadata)
    _convert(format, onnx_path, path, half=half, metadata=metadata, batch=batch, dynamic_batch=dynamic_batch)
    result = ExportResult(path=path, format=format, onnx_path=onnx_path, settings=settings)
    if verify:  # against PyTorch, on noise and real images
        tol = tolerance if tolerance is not None else TOLERANCE["fp16" if half else "fp32"]
        result.checks = verify_export(module, path, FORMAT_RUNTIME[format], img_size=img_size,
                                      batches=(batch, batch + 1) if dynamic_batch else (batch,), nms=nms,
                                      images=verify_images, tolerance=tol, threads=threads)
        _raise_on_mismatch(result)
    return result


def _convert(format: str, onnx_path: Path, path: Path, *, half: bool, metadata: dict[str, Any], batch: int,
             dynamic_batch: bool) -> None:
    """The ONNX graph -> the format's own file (nothing to do for ``onnx``)."""
    if format == "openvino":
        write_openvino(onnx_path, path, half=half, metadata=metadata)
    elif format == "tensorrt":
        from yolo_prune.deploy.tensorrt import build_engine

        build_engine(onnx_path, path, half=half, batch_range=(1, batch, max(batch, 8)) if dynamic_batch else None)


def _metadata(loaded: LoadedModel, img_size: int, nms: bool, settings: dict[str, Any]) -> dict[str, Any]:
    """What the exported file carries about itself (read back by ``read_metadata``)."""
    return {"family": loaded.family, "names": list(loaded.names), "stride": int(max(loaded.stride or [32])),
            "img_size": img_size, "output": output_layout(nms, loaded.nc), "settings": settings}


def _check_export_args(loaded: LoadedModel, path: Path, format: str, img_size: int, batch: int) -> Path:
    if format not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {format!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    suffix = EXPORT_FORMATS[format]
    if path.suffix != suffix:
        raise ValueError(f"a {format} export is written to a {suffix} file, got {path}; "
                         f"use --out {path.with_suffix(suffix)}")
    stride = int(max(loaded.stride or [32]))
    if img_size <= 0 or img_size % stride:
        raise ValueError(f"--img-size {img_size} must be a positive multiple of the model's stride {stride}; "
                         f"try {max(stride, round(img_size / stride) * stride)}")
    if batch < 1:
        raise ValueError(f"--batch {batch} must be at least 1")
    path.parent.mkdir(parents=True, exist_ok=True)
    if format == "tensorrt":
        require_runtime("tensorrt")  # fail before minutes of tracing
    return path


def _raise_on_mismatch(result: ExportResult) -> None:
    failed = [c for c in result.checks if not c.passed]
    if not failed:
        return
    worst = failed[0]
    if worst.detections_torch != worst.detections_export:
        raise ExportMismatchError(
            f"{result.path}: PyTorch found {worst.detections_torch} detections on {worst.input} (batch {worst.batch}) "
            f"and {worst.runtime} {worst.detections_export}. NMS flips decisions between near-tied scores (untrained "
            "weights give little else); verify the graph without --nms, or raise --conf-thres")
    raise ExportMismatchError(
        f"{result.path} does not match PyTorch on {worst.input} (batch {worst.batch}, {worst.runtime}): max abs "
        f"diff {worst.max_abs_diff_boxes_px:.4g} px in boxes, {worst.max_abs_diff_scores:.4g} in scores; tolerance "
        f"{worst.tolerance:g}. Re-export without --half / --simplify to find the cause, or raise --tolerance")


def verification_inputs(img_size: int, batch: int, images: Sequence[str | Path] = (),
                        seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """(label, float ``[batch, 3, img_size, img_size]``): random noise, then each real image.

    With no ``images``, a synthetic scene (shapes on textured ground) stands in for a photo.
    """
    from yolo_prune.deploy.images import preprocess, read_image

    rng = np.random.default_rng(seed)
    inputs = [("random noise", rng.random((batch, 3, img_size, img_size), dtype=np.float32))]
    if images:
        frames = [(f"image {p}", read_image(p)) for p in images]
    else:
        from yolo_prune.data.synthetic import render_image

        frames = [("synthetic scene", render_image(rng, img_size)[0])]
    for label, frame in frames:
        x = preprocess([frame], img_size)[0]
        inputs.append((label, np.repeat(x, batch, axis=0)))
    return inputs


def verify_export(module: nn.Module, path: str | Path, runtime: str, *, img_size: int, batches: Sequence[int] = (1,),
                  nms: bool = False, images: Sequence[str | Path] = (), tolerance: float = TOLERANCE["fp32"],
                  threads: int | None = None) -> list[ExportCheck]:
    """Runs PyTorch and ``runtime`` on the same inputs; one ``ExportCheck`` per input and batch."""
    runner = make_runner(runtime, path, threads=threads or default_threads())
    checks = []
    for batch in batches:
        for label, x in verification_inputs(img_size, batch, images):
            with torch.inference_mode():
                expected = module(torch.from_numpy(x)).float().numpy()
            actual = runner(x)
            boxes_px, scores = (_compare_detections if nms else _compare_predictions)(expected, actual)
            passed = boxes_px / img_size <= tolerance and scores <= tolerance
            check = ExportCheck(input=label, runtime=runtime, batch=batch, max_abs_diff_boxes_px=boxes_px,
                                max_abs_diff_scores=scores, tolerance=tolerance, passed=bool(passed),
                                detections_torch=len(expected) if nms else None,
                                detections_export=len(actual) if nms else None)
            LOGGER.info("export check %s: %s", "ok" if passed else "FAILED", check)
            checks.append(check)
    return checks


def _compare_predictions(expected: np.ndarray, actual: np.ndarray) -> tuple[float, float]:
    if expected.shape != actual.shape:
        return float("inf"), float("inf")
    diff = np.abs(expected - actual)
    return float(diff[..., :4].max(initial=0.0)), float(diff[..., 4:].max(initial=0.0))


def _compare_detections(expected: np.ndarray, actual: np.ndarray) -> tuple[float, float]:
    """Matches each PyTorch detection to the nearest exported one of the same image and class.

    Order within a class may differ where scores tie, so rows are matched, not compared in order.
    """
    if expected.shape != actual.shape:
        return float("inf"), float("inf")
    boxes_px, scores = 0.0, 0.0
    for row in expected:
        same = actual[(actual[:, 0] == row[0]) & (actual[:, 6] == row[6])]
        if not len(same):
            return float("inf"), float("inf")
        nearest = same[np.abs(same[:, 1:6] - row[1:6]).max(1).argmin()]
        boxes_px = max(boxes_px, float(np.abs(nearest[1:5] - row[1:5]).max()))
        scores = max(scores, float(abs(nearest[5] - row[5])))
    return boxes_px, scores
