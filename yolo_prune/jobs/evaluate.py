"""The evaluation job: COCO mAP (fused model, rectangular letterboxed batches), latency and size.

Outputs: the metrics JSON (``<weights stem>-eval.json`` by default) and its resolved settings
beside it (``.args.yaml``).
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

from yolo_prune.adapters import get_adapter, load_model
from yolo_prune.benchmark import BenchmarkSettings, model_summary
from yolo_prune.data import CocoDetectionDataset
from yolo_prune.data.errors import DataError, warn_data
from yolo_prune.devices import select_device
from yolo_prune.engine.classes import same_classes
from yolo_prune.evaluation import EvalSettings
from yolo_prune.evaluation import evaluate as evaluate_dataset
from yolo_prune.evaluation.settings import DEFAULTS
from yolo_prune.io import LoadedModel, atomic_write_json

LOGGER = logging.getLogger(__name__)


def evaluate_model(loaded: LoadedModel, images: str | Path, ann: str | Path, *, img_size: int = DEFAULTS.img_size,
                   batch_size: int = DEFAULTS.batch_size, fuse: bool = DEFAULTS.fuse,
                   device: Any = DEFAULTS.device, **settings: Any) -> dict[str, Any]:
    """COCO mAP of ``loaded`` on an image folder + COCO json (rectangular letterboxed batches).

    Args:
        loaded: The model (left unchanged: a fused copy is evaluated when ``fuse``).
        images: The image folder of ``ann``.
        ann: Its COCO annotation json.
        img_size: Long side of the letterboxed inputs.
        batch_size: Images per forward.
        fuse: Evaluate the fused model, as deployed.
        device: Torch device (``''``: GPU if any, else CPU).
        **settings: ``yolo_prune.evaluation.evaluate`` options (conf_thres, iou_thres, backend, ...).

    Raises:
        DataError: the model's class count differs from the dataset's.

    >>> import tempfile, yolo_prune
    >>> from yolo_prune.data import load_data_config
    >>> from yolo_prune.data.synthetic import make_synthetic_dataset
    >>> data = load_data_config(make_synthetic_dataset(tempfile.mkdtemp(), n_train=0, n_val=4, img_size=64))
    >>> loaded = yolo_prune.load(cfg="yolov7-tiny", nc=len(data.names))
    >>> metrics = yolo_prune.evaluate(loaded, data.val_images, data.val_ann, img_size=64, device="cpu", workers=0)
    >>> 0.0 <= metrics["map50"] <= 1.0 and "per_class" in metrics
    True
    """
    adapter = get_adapter(loaded.family)
    stride = max(max(loaded.stride or [32]), 32)
    dataset = CocoDetectionDataset(images, ann, img_size=img_size, rect=True, batch_size=batch_size, stride=stride)
    if loaded.nc != len(dataset.names):  # fail before any inference
        raise DataError(f"the model predicts {loaded.nc} classes but {ann} has {len(dataset.names)}; "
                        f"evaluate a model trained (or fine-tuned) for this dataset")
    warn_other_names(loaded.names, dataset.names, ann)
    model = adapter.fuse(copy.deepcopy(loaded.model).eval()) if fuse else loaded.model
    return evaluate_dataset(model, dataset, decode=adapter.decode, batch_size=batch_size, device=device, **settings)


def warn_other_names(model_names: list[str], data_names: list[str], ann: str | Path) -> None:
    """Equal class counts under other names: mAP pairs classes by index, which then may not mean one class."""
    if same_classes(model_names, data_names):
        return
    differ = [f"{i}: {m!r} vs {d!r}" for i, (m, d) in enumerate(zip(model_names, data_names, strict=True)) if m != d]
    warn_data(f"{len(differ)} of {len(data_names)} class names of the model differ from {ann}'s ({', '.join(differ[:3])}"
              f"{', ...' if len(differ) > 3 else ''}); mAP pairs classes by index: check that each index means the "
              f"same class in both")


def run_eval(settings: EvalSettings) -> dict[str, Any]:
    """Evaluates the model of ``settings``; writes and returns the report (metrics, model, latency, settings)."""
    s = settings
    images, ann = dataset_paths(s)
    device = select_device(s.device)
    loaded = _load(s, ann)
    metrics = evaluate_model(loaded, images, ann, img_size=s.img_size, batch_size=s.batch_size, fuse=s.fuse,
                             conf_thres=s.conf_thres, iou_thres=s.iou_thres, max_det=s.max_det, device=device,
                             half=s.half, backend=s.backend, workers=s.workers, max_images=s.max_images,
                             results_path=s.save_results)
    adapter = get_adapter(loaded.family)
    latency = None
    if s.bench_runs > 0:
        latency = BenchmarkSettings(batch=1, device=str(device), half=s.half and device.type == "cuda",
                                    runs=s.bench_runs)
    row = model_summary(loaded.model, s.img_size, fuse=adapter.fuse if s.fuse else None, decode=adapter.decode,
                        file=s.weights, latency=latency)  # params / GMACs unfused, as in the prune report
    report = {"weights": str(s.weights) if s.weights else None, "cfg": s.cfg, "data": str(s.data or ann),
              "split": s.split if s.data else None, "img_size": s.img_size, "fused": s.fuse,
              "metrics": {k: v for k, v in metrics.items() if k != "settings"}, "settings": metrics["settings"],
              "model": {k: row[k] for k in ("params_m", "gmacs", "file_mib") if k in row}, "args": s.to_dict()}
    if "timing" in row:
        report["latency"] = row["timing"]
    out = Path(s.out) if s.out is not None else default_out(s)
    atomic_write_json(report, out)
    s.save(out.with_suffix(".args.yaml"))
    report["out"] = out
    return report


def dataset_paths(s: EvalSettings) -> tuple[Path, Path]:
    """The image folder and COCO json to evaluate on: a split of ``s.data``, or ``s.images`` + ``s.ann``."""
    from yolo_prune.data import load_data_config

    if s.data is not None:
        return load_data_config(s.data).split(s.split)
    if s.ann is None or s.images is None:
        raise ValueError("pass --data data.yaml, or both --ann instances.json and --images DIR")
    return Path(s.images), Path(s.ann)


def default_out(s: EvalSettings) -> Path:
    """``<weights stem>-eval.json`` beside the weights (``runs/eval/<cfg>-eval.json`` for a cfg)."""
    if s.weights is not None:
        return Path(s.weights).with_name(Path(s.weights).stem + "-eval.json")
    return Path("runs/eval") / f"{Path(str(s.cfg)).stem}-eval.json"


def _load(s: EvalSettings, ann: Path) -> LoadedModel:
    from yolo_prune.data.config import names_from_coco_json

    if s.weights is None and s.cfg is None:
        raise ValueError("pass --weights model.pt (or --cfg to check the pipeline on a random model)")
    if s.weights is not None and not Path(s.weights).is_file():
        raise FileNotFoundError(f"--weights {s.weights} does not exist")
    nc = len(names_from_coco_json(ann)) if s.weights is None else None
    return load_model(s.weights, cfg=s.cfg, family=s.family, trust=s.trust, nc=nc)
