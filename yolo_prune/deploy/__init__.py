"""Deploy what was pruned: export (ONNX, OpenVINO IR, TensorRT) with verification, and predict.

``runtimes`` has one runner per runtime (torch, onnxruntime, openvino, tensorrt); ``export``
writes and checks files; ``predict`` draws and saves detections. Heavy runtimes are imported
only when used.
"""
from yolo_prune.deploy.export import EXPORT_FORMATS, ExportMismatchError, ExportResult, export_model, read_metadata
from yolo_prune.deploy.runtimes import RUNTIMES, make_runner, missing_runtime

__all__ = ["EXPORT_FORMATS", "ExportMismatchError", "ExportResult", "RUNTIMES", "export_model", "make_runner",
           "missing_runtime", "read_metadata"]
