"""Detections on images and videos, from a checkpoint or an exported file.

``Detector`` turns frames into boxes in original-image pixels: letterbox to a square input,
run (PyTorch, ONNX Runtime, OpenVINO or TensorRT), NMS (unless the graph did it), map the
boxes back. ``predict`` walks images, folders, globs and video files with a progress bar and
writes, each atomically:

* annotated images (same name) and videos (same name, re-encoded) in ``out_dir``;
* with ``save_txt``: ``labels/<stem>.txt`` (``<stem>_<frame>.txt`` for videos), one line per
  box: ``class cx cy w h score``, coordinates normalised to the original image (YOLO format);
* with ``save_json``: ``predictions.json``, COCO result records (``image_id``, ``category_id``
  = class index, ``bbox`` x, y, w, h in pixels, ``score``) plus ``file_name`` / ``frame``.
"""
from __future__ import annotations

import contextlib
import glob
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import cv2
import numpy as np
import torch

from yolo_prune.data.transforms import scale_boxes
from yolo_prune.deploy.images import preprocess, read_image  # noqa: F401  (part of this module's API)
from yolo_prune.evaluation.nms import non_max_suppression
from yolo_prune.io.atomic import atomic_path, atomic_write_json, atomic_write_text
from yolo_prune.reporting import progress_off
from yolo_prune.settings import IMG_SIZE

LOGGER = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg"})
_VIDEO_CODECS = {".avi": "MJPG"}  # everything else is written as mp4v
_PALETTE = [(56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
            (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0),
            (147, 69, 52), (255, 115, 100), (236, 24, 0), (255, 56, 132), (133, 0, 82), (255, 56, 203)]


def find_sources(sources: Sequence[str | Path]) -> list[Path]:
    """Image and video files named by paths, folders (their files, sorted) and glob patterns.

    Raises:
        FileNotFoundError: a source matches nothing, or nothing found is an image or video.
    """
    found: list[Path] = []
    for source in sources:
        text = str(source)
        if any(ch in text for ch in "*?["):
            matches = [Path(p) for p in sorted(glob.glob(text, recursive=True))]
        elif Path(text).is_dir():
            matches = sorted(p for p in Path(text).iterdir() if p.is_file())
        elif Path(text).is_file():
            matches = [Path(text)]
        else:
            raise FileNotFoundError(f"source {text!r} is neither a file, a folder nor a glob that matches; "
                                    "check the path")
        found.extend(p for p in matches if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
    if not found:
        raise FileNotFoundError(f"no image or video files in {', '.join(map(str, sources))}; supported: "
                                f"{', '.join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))}")
    return found


@dataclass
class Detector:
    """Frames -> per-frame ``[n, 6]`` detections (x1, y1, x2, y2, score, class) in frame pixels.

    Attributes:
        infer: Float ``[B, 3, S, S]`` -> the graph output (a runner of ``yolo_prune.deploy.runtimes``).
        names: Class names.
        img_size: S, the square input side.
        layout: ``predictions`` (``[B, N, 5 + nc]``, NMS done here) or ``detections`` (``[K, 7]``
            from a graph with NMS inside; only the thresholds are applied here).
    """

    infer: Callable[[np.ndarray], np.ndarray]
    names: list[str]
    img_size: int = IMG_SIZE
    layout: str = "predictions"
    conf_thres: float = 0.25
    iou_thres: float = 0.45
    classes: list[int] | None = None
    max_det: int = 300
    graph_batch: int | None = None  # an exported graph's fixed batch; None: any

    @classmethod
    def from_model(cls, loaded: Any, *, img_size: int = IMG_SIZE, device: str | torch.device = "cpu", half: bool = False,
                   threads: int | None = None, **settings: Any) -> "Detector":
        """A detector running a loaded model's fused copy in PyTorch (``settings``: thresholds)."""
        from yolo_prune.deploy.export import export_module
        from yolo_prune.deploy.runtimes import TorchRunner

        stride = int(max(loaded.stride or [32]))
        if img_size % stride:
            raise ValueError(f"--img-size {img_size} must be a multiple of the model's stride {stride}; "
                             f"try {max(stride, round(img_size / stride) * stride)}")
        runner = TorchRunner(export_module(loaded), device=device, half=half, threads=threads)
        return cls(runner, list(loaded.names), img_size=img_size, **settings)

    @classmethod
    def from_export(cls, path: str | Path, *, img_size: int | None = None, threads: int | None = None,
                    **settings: Any) -> "Detector":
        """A detector running an exported file (``.onnx``, ``.xml``, ``.engine``) on its runtime."""
        from yolo_prune.deploy.export import read_metadata
        from yolo_prune.deploy.runtimes import make_runner

        path = Path(path)
        runtime = {".onnx": "onnxruntime", ".xml": "openvino", ".engine": "tensorrt"}.get(path.suffix)
        if runtime is None:
            raise ValueError(f"{path} is not an exported model; pass a .pt checkpoint or an .onnx / .xml / .engine")
        meta = read_metadata(path if runtime != "tensorrt" else path.with_suffix(".onnx"))
        if not meta:
            raise ValueError(f"{path} carries no yolo_prune metadata (class names, input size); export it with "
                             "yolo-prune export")
        if img_size is not None and img_size != meta["img_size"]:
            raise ValueError(f"{path} was exported for {meta['img_size']} px inputs, not --img-size {img_size}; "
                             f"drop --img-size or re-export at {img_size}")
        runner = make_runner(runtime, path, threads=threads)
        graph = meta.get("settings", {})
        return cls(runner, list(meta["names"]), img_size=int(meta["img_size"]), layout=meta["output"]["name"],
                   graph_batch=None if graph.get("dynamic_batch") else int(graph.get("batch", 1)), **settings)

    def __call__(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Frames -> per-frame ``[n, 6]`` detections in frame pixels."""
        n, fixed = len(frames), self.graph_batch
        if fixed is not None and n != fixed:  # a fixed-batch graph: run it chunk by chunk, the last one padded
            if n > fixed:
                return [d for i in range(0, n, fixed) for d in self(frames[i:i + fixed])]
            return self(list(frames) + [frames[-1]] * (fixed - n))[:n]
        x, ratio_pads = preprocess(frames, self.img_size)
        out = self.infer(x)
        if self.layout == "detections":
            dets = [self._filter(out[out[:, 0] == b][:, 1:7]) for b in range(len(frames))]
        else:
            dets = [d.numpy() for d in non_max_suppression(
                torch.from_numpy(out), conf_thres=self.conf_thres, iou_thres=self.iou_thres,
                max_det=self.max_det, classes=self.classes, multi_label=False)]
        shape = (self.img_size, self.img_size)
        for det, frame, ratio_pad in zip(dets, frames, ratio_pads, strict=False):
            det[:, :4] = scale_boxes(det[:, :4], shape, frame.shape[:2], ratio_pad)
        return dets

    def _filter(self, det: np.ndarray) -> np.ndarray:
        det = det[det[:, 4] > self.conf_thres]
        if self.classes is not None:
            det = det[np.isin(det[:, 5].astype(int), self.classes)]
        return det[np.argsort(-det[:, 4], kind="stable")[: self.max_det]]


def draw_detections(img: np.ndarray, det: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """A copy of ``img`` with each box and its ``name score`` label drawn."""
    out = img.copy()
    thickness = max(1, round(sum(img.shape[:2]) / 600))
    for x1, y1, x2, y2, score, cls in det:
        c = int(cls)
        colour = _PALETTE[c % len(_PALETTE)]
        p1, p2 = (int(x1), int(y1)), (int(x2), int(y2))
        cv2.rectangle(out, p1, p2, colour, thickness, cv2.LINE_AA)
        label = f"{names[c] if c < len(names) else c} {score:.2f}"
        (w, h), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, thickness / 3, 1)
        top = max(p1[1] - h - 3, 0)
        cv2.rectangle(out, (p1[0], top), (p1[0] + w, top + h + 3), colour, -1, cv2.LINE_AA)
        cv2.putText(out, label, (p1[0], top + h + 1), cv2.FONT_HERSHEY_SIMPLEX, thickness / 3, (255, 255, 255), 1,
                    cv2.LINE_AA)
    return out


def yolo_txt(det: np.ndarray, shape: tuple[int, int]) -> str:
    """YOLO label lines ``class cx cy w h score`` (normalised to ``shape`` (h, w))."""
    h, w = shape
    lines = []
    for x1, y1, x2, y2, score, cls in det:
        cx, cy, bw, bh = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h
        lines.append(f"{int(cls)} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f} {score:.5f}")
    return "\n".join(lines) + ("\n" if lines else "")


def coco_records(det: np.ndarray, image_id: int | str, **extra: Any) -> list[dict[str, Any]]:
    """COCO result records of one frame (``category_id`` is the class index)."""
    return [{"image_id": image_id, "category_id": int(cls), "bbox": [round(float(v), 3) for v in
                                                                     (x1, y1, x2 - x1, y2 - y1)],
             "score": round(float(score), 5), **extra} for x1, y1, x2, y2, score, cls in det]


@dataclass
class PredictResult:
    """What ``predict`` processed and wrote."""

    out_dir: Path
    images: int = 0
    videos: int = 0
    frames: int = 0
    detections: int = 0
    written: list[Path] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Plain values for JSON."""
        return {"out_dir": str(self.out_dir), "images": self.images, "videos": self.videos, "frames": self.frames,
                "detections": self.detections, "written": [str(p) for p in self.written]}


def predict(detector: Detector, sources: Sequence[str | Path], out_dir: str | Path, *, save_images: bool = True,
            save_txt: bool = False, save_json: bool = False, progress: bool = True) -> PredictResult:
    """Runs ``detector`` on every source file and writes what is asked (see the module docstring)."""
    from tqdm import tqdm

    files = find_sources(sources)
    result = PredictResult(out_dir=Path(out_dir))
    result.out_dir.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    for path in tqdm(files, desc="predict", unit="file", disable=not progress or progress_off()):
        is_video = path.suffix.lower() in VIDEO_SUFFIXES
        frames = _video_frames(path) if is_video else iter([read_image(path)])
        sink = _video_output(result.out_dir / path.name, path) if is_video and save_images else _no_video()
        with sink as write_frame:
            for index, frame in enumerate(frames):
                det = detector([frame])[0]
                result.frames += 1
                result.detections += len(det)
                stem = f"{path.stem}_{index}" if is_video else path.stem
                if save_txt:
                    result.written.append(atomic_write_text(yolo_txt(det, frame.shape[:2]),
                                                            result.out_dir / "labels" / f"{stem}.txt"))
                if save_json:
                    image_id = int(stem) if stem.isdigit() else stem
                    extra = {"file_name": path.name, **({"frame": index} if is_video else {})}
                    records.extend(coco_records(det, image_id, **extra))
                if save_images:
                    annotated = draw_detections(frame, det, detector.names)
                    if is_video:
                        write_frame(annotated)
                    else:
                        result.written.append(_write_image(annotated, result.out_dir / path.name))
        if is_video and save_images:
            result.written.append(result.out_dir / path.name)
        result.videos += is_video
        result.images += not is_video
    if save_json:
        result.written.append(atomic_write_json(records, result.out_dir / "predictions.json"))
    return result


def _write_image(img: np.ndarray, path: Path) -> Path:
    ok, encoded = cv2.imencode(path.suffix, img)
    if not ok:
        raise ValueError(f"OpenCV cannot encode {path.suffix} images; save as .jpg or .png")
    with atomic_path(path) as tmp:
        tmp.write_bytes(encoded.tobytes())
    return path


def _video_frames(path: Path) -> Iterator[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"cannot open video {path}; is it a video file OpenCV can decode?")
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield frame
    finally:
        capture.release()


@contextlib.contextmanager
def _video_output(path: Path, source: Path) -> Iterator[Callable[[np.ndarray], None]]:
    """Yields ``write(frame)``; the video is encoded beside ``path`` and moved over it at the end."""
    capture = cv2.VideoCapture(str(source))
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    capture.release()
    writers: list[Any] = []
    with atomic_path(path, keep_suffix=True) as tmp:
        def write(frame: np.ndarray) -> None:
            if not writers:  # the size is known only from the first frame
                codec = cv2.VideoWriter_fourcc(*_VIDEO_CODECS.get(path.suffix.lower(), "mp4v"))
                writers.append(cv2.VideoWriter(str(tmp), codec, fps, frame.shape[1::-1]))
            writers[0].write(frame)

        try:
            yield write
        finally:
            for writer in writers:
                writer.release()


@contextlib.contextmanager
def _no_video() -> Iterator[Callable[[np.ndarray], None]]:
    def refuse(frame: np.ndarray) -> None:
        raise RuntimeError("internal error: no video is being written")

    yield refuse
