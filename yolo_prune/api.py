"""The public API: load, prune, finetune, evaluate, benchmark.

Scripts and the CLI call only these functions (and the adapters through them), so the
same job can be scripted from Python (each function's docstring has a runnable example;
``tests/test_workflow.py`` runs them as doctests):

    >>> import tempfile, yolo_prune
    >>> loaded = yolo_prune.load(cfg="yolov7-tiny", nc=3)     # or yolo_prune.load("yolov7-tiny.pt")
    >>> result = yolo_prune.prune(loaded, pruning_ratio=0.5, round_to=8, img_size=128)
    >>> result
    PruneResult(params 6.02 M -> 1.51 M, GMACs 0.263 -> 0.068 (3.9x), 55 groups)
    >>> path = yolo_prune.save(loaded, f"{tempfile.mkdtemp()}/yolov7-tiny-p50.pt")
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import yaml

from yolo_prune.adapters import ADAPTERS, DetectorAdapter, LoadedModel, get_adapter
from yolo_prune.io.atomic import atomic_write_text
from yolo_prune.io.inspect import pickle_globals
from yolo_prune.pruning import PruneResult, prune_model


def load(weights: str | Path | None = None, *, cfg: str | Path | None = None, family: str | None = None,
         trust: bool = False, nc: int | None = None) -> LoadedModel:
    """Loads a checkpoint (any registered family) or builds a fresh model from a cfg.

    Args:
        weights: A checkpoint file. Its family is recognised from the classes it pickles.
        cfg: A model cfg (path or known name): the model to build when ``weights`` is None,
            or the architecture for a bare state dict in ``weights``.
        family: Skip recognition and use this adapter (``yolov7``, ``ultralytics``).
        trust: Allow arbitrary pickled code (only for files from a source you trust).
        nc: Number of classes when building from a cfg.

    Example:
        >>> load(cfg="yolov7-tiny", nc=3)
        LoadedModel(yolov7, 3 classes, 6.02 M params, stride [8, 16, 32], source=yolov7-tiny)
    """
    if weights is None and cfg is None:
        raise ValueError("nothing to load: pass --weights path/to/model.pt, or --cfg to build a new model")
    adapter = get_adapter(family) if family else _adapter_for(weights, cfg)
    if weights is None:
        return adapter.build(cfg, nc=nc)
    return adapter.load(weights, trust=trust, cfg=cfg)


def adapter_of(loaded: LoadedModel) -> DetectorAdapter:
    """The adapter of a loaded model's family."""
    return get_adapter(loaded.family)


class PrunedCfgWarning(UserWarning):
    """The pruned widths cannot be written in the family's cfg: its own trainer would rebuild the unpruned model."""


def prune(loaded: LoadedModel, **settings: Any) -> PruneResult:
    """Prunes ``loaded.model`` in place; ``settings`` are those of ``prune_model``.

    The ratio is ``pruning_ratio`` (torch-pruning's name); ``ratio`` (the CLI's ``--ratio``) is
    accepted too. Warns (``PrunedCfgWarning``) when the pruned widths have no form in the
    family's own cfg, naming why and how to train the model without losing them.

    Example:
        >>> loaded = load(cfg="yolov7-tiny", nc=3)
        >>> prune(loaded, ratio=0.5, round_to=8, img_size=128).macs_reduction > 3
        True
    """
    if "ratio" in settings:
        if "pruning_ratio" in settings:
            raise TypeError("pass the ratio once: pruning_ratio=... or ratio=..., not both")
        settings["pruning_ratio"] = settings.pop("ratio")
    adapter = adapter_of(loaded)
    result = prune_model(loaded.model, adapter, **settings)
    loaded.model = result.model
    if not result.dry_run:
        loaded.meta["pruning"] = result.summary()["settings"]
        note = cfg_note(loaded)
        if note is not None:
            warnings.warn(note, PrunedCfgWarning, stacklevel=2)
    return result


def cfg_note(loaded: LoadedModel) -> str | None:
    """None when the family's cfg can describe ``loaded.model``; else why not and how to keep its widths."""
    adapter = adapter_of(loaded)
    form = adapter.cfg_form(loaded.model)
    if form.cfg is not None:
        return None
    return (f"the pruned widths cannot be written in the {loaded.family} cfg ({form.reason}), so "
            f"{adapter.own_trainer_hint(False)}")


def save_cfg(loaded: LoadedModel, path: str | Path) -> Path | None:
    """Writes the family's cfg that rebuilds ``loaded.model`` (pruned widths included) as yaml.

    Returns the path, or None (nothing written) when the family's cfg cannot describe the model.
    """
    form = adapter_of(loaded).cfg_form(loaded.model)
    if form.cfg is None:
        return None
    return atomic_write_text(yaml.safe_dump(form.cfg, sort_keys=False), path)


def save(loaded: LoadedModel, path: str | Path, *, extra: dict | None = None) -> Path:
    """Writes ``loaded`` atomically in its family's own checkpoint format.

    Example:
        >>> import tempfile
        >>> path = save(load(cfg="yolov7-tiny", nc=3), f"{tempfile.mkdtemp()}/tiny.pt")
        >>> load(path).nc
        3
    """
    return adapter_of(loaded).save(loaded, path, extra=extra)


def _adapter_for(weights: str | Path | None, cfg: str | Path | None) -> DetectorAdapter:
    adapters = [ADAPTERS.get(name)() for name in ADAPTERS]
    if weights is not None:
        try:
            packages = {module.split(".")[0] for module, _ in pickle_globals(weights)}
        except ValueError:
            # not a zip checkpoint: let the default family's loader explain what is wrong
            return get_adapter("yolov7")
        matches = [a for a in adapters if packages & set(a.pickle_packages)]
        if len(matches) == 1:
            return matches[0]
        if not matches and cfg is None:
            return get_adapter("yolov7")  # e.g. a bare state dict: its loader asks for --cfg
    for adapter in adapters:
        if cfg is not None and adapter.owns_cfg(cfg):
            return adapter
    raise ValueError(
        f"cannot tell which detector family {weights or cfg} belongs to; pass --family "
        f"({', '.join(ADAPTERS.names())})")


def evaluate(loaded: LoadedModel, images: str | Path, ann: str | Path, *, img_size: int = 640,
             batch_size: int = 16, fuse: bool = True, device: str | Any = "cpu", **settings: Any) -> dict[str, Any]:
    """COCO mAP of ``loaded`` on an image folder + COCO json (rectangular letterboxed batches).

    Args:
        loaded: The model (left unchanged: a fused copy is evaluated when ``fuse``).
        images, ann: The image folder and its COCO annotation json.
        img_size: Long side of the letterboxed inputs.
        batch_size: Images per forward.
        fuse: Evaluate the fused model, as deployed.
        device: Torch device.
        **settings: ``yolo_prune.evaluation.evaluate`` options (conf_thres, iou_thres, backend, ...).

    Raises:
        DataError: the model's class count differs from the dataset's.

    Example:
        >>> import tempfile
        >>> from yolo_prune.data import load_data_config
        >>> from yolo_prune.data.synthetic import make_synthetic_dataset
        >>> data = load_data_config(make_synthetic_dataset(tempfile.mkdtemp(), n_train=0, n_val=2, img_size=64))
        >>> metrics = evaluate(load(cfg="yolov7-tiny", nc=len(data.names)), *data.split("val"), img_size=64)
        >>> 0.0 <= metrics["map50_95"] <= 1.0
        True
    """
    import copy

    from yolo_prune.data import CocoDetectionDataset
    from yolo_prune.data.errors import DataError
    from yolo_prune.evaluation.evaluator import evaluate as evaluate_dataset

    adapter = adapter_of(loaded)
    stride = max(max(loaded.stride or [32]), 32)
    dataset = CocoDetectionDataset(images, ann, img_size=img_size, rect=True, batch_size=batch_size, stride=stride)
    if loaded.nc != len(dataset.names):  # fail before any inference
        raise DataError(f"the model predicts {loaded.nc} classes but {ann} has {len(dataset.names)}; "
                        f"evaluate a model trained (or fine-tuned) for this dataset")
    model = adapter.fuse(copy.deepcopy(loaded.model).eval()) if fuse else loaded.model
    return evaluate_dataset(model, dataset, decode=adapter.decode, batch_size=batch_size, device=device, **settings)


def benchmark(loaded: LoadedModel, img_size: int = 640, **settings: Any) -> dict[str, Any]:
    """Params, GMACs and fused latency / FPS of ``loaded`` (``measure_latency`` options in ``settings``).

    Example:
        >>> stats = benchmark(load(cfg="yolov7-tiny", nc=3), img_size=64, runs=2, warmup=1)
        >>> round(stats["params_m"], 2), stats["latency"]["fps"] > 0
        (6.02, True)
    """
    from yolo_prune.benchmark import measure_latency, model_stats

    adapter = adapter_of(loaded)
    latency = measure_latency(loaded.model, img_size, fuse=adapter.fuse, decode=adapter.decode, **settings)
    return {**model_stats(loaded.model, img_size), "latency": latency}


def finetune(model: LoadedModel | str | Path | None = None, *, data: str | Path | None = None,
             cfg: str | Path | None = None, family: str | None = None, trust: bool = False,
             out_dir: str | Path = "runs/finetune/exp", **settings: Any) -> Any:
    """Fine-tunes a model on a COCO-format dataset; returns a ``FinetuneResult``.

    Families whose adapter brings its own trainer (Ultralytics) are trained by it; every other
    family by ``yolo_prune.engine.finetune`` (see there for ``settings``: epochs, img_size, ...).

    Example (an 80-class model on 5-class data: its head is rebuilt for the data's classes):
        >>> import tempfile
        >>> from yolo_prune.data.synthetic import make_synthetic_dataset
        >>> root = tempfile.mkdtemp()
        >>> data = make_synthetic_dataset(root, n_train=2, n_val=0, img_size=64)
        >>> run = finetune(load(cfg="yolov7-tiny"), data=data, out_dir=f"{root}/run", epochs=1, img_size=64,
        ...                batch_size=2, workers=0, device="cpu", val=False)  # doctest: +ELLIPSIS
        the model predicted 80 classes; its head now predicts the data's 5 ...
        >>> run                                                # doctest: +ELLIPSIS
        FinetuneResult(1 epochs, best fitness None, best .../run/weights/best.pt)
    """
    from yolo_prune.engine.finetune import finetune as engine_finetune

    adapter = _trainer_adapter(model, cfg, family, settings.get("resume"))
    if adapter is None or not adapter.has_own_trainer:
        return engine_finetune(model, data=data, cfg=cfg, family=family, trust=trust, out_dir=out_dir, **settings)
    return _finetune_with_own_trainer(adapter, model, data=data, cfg=cfg, trust=trust, out_dir=Path(out_dir),
                                      **settings)


# engine setting -> the name a family's own trainer takes it under (Ultralytics' trainer: ``nbs`` is its
# nominal batch). ``val_period`` and ``exist_ok`` are accepted and have no effect there: that trainer
# validates every epoch and writes into its run folder.
# Any other engine setting is refused, not silently dropped.
_OWN_TRAINER_SETTINGS = {"epochs": "epochs", "img_size": "img_size", "batch_size": "batch_size", "device": "device",
                         "workers": "workers", "seed": "seed", "nominal_batch": "nbs", "val_period": None,
                         "exist_ok": None, "rename_classes": "rename_classes"}


def _trainer_adapter(model: Any, cfg: Any, family: str | None, resume: Any) -> DetectorAdapter | None:
    if family:
        return get_adapter(family)
    if isinstance(model, LoadedModel):
        return adapter_of(model)
    if resume or (model is None and cfg is None):
        return None  # the engine resumes its own runs and reports missing inputs itself
    return _adapter_for(model, cfg)


def _finetune_with_own_trainer(adapter: DetectorAdapter, model: Any, *, data: Any, cfg: Any, trust: bool,
                               out_dir: Path, **settings: Any) -> Any:
    from yolo_prune.engine.finetune import FinetuneResult

    unsupported = sorted(k for k, v in settings.items() if v not in (None, False) and k not in _OWN_TRAINER_SETTINGS)
    if unsupported:
        raise ValueError(f"the {adapter.name} family fine-tunes with its own trainer, which does not take "
                         f"{', '.join(unsupported)}; drop them or use that trainer's options directly")
    if data is None:
        raise ValueError("--data is required (a data yaml)")
    loaded = model if isinstance(model, LoadedModel) else load(model, cfg=cfg, family=adapter.name, trust=trust)
    renamed = {_OWN_TRAINER_SETTINGS[k]: v for k, v in settings.items()
                if v is not None and _OWN_TRAINER_SETTINGS.get(k) is not None}
    tuned = adapter.finetune(loaded, data, project=out_dir.parent, name=out_dir.name, **renamed)
    run_dir = Path(tuned.meta.get("run_dir", out_dir))
    weights = run_dir / "weights"
    return FinetuneResult(out_dir=run_dir, last=weights / "last.pt", best=weights / "best.pt", best_fitness=None,
                          epochs=int(settings.get("epochs") or 0), row=dict(tuned.meta.get("metrics", {})),
                          model=tuned.model)
