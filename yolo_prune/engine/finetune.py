"""``finetune(...)`` / ``resume(...)``: everything around the loop (data, hyp, run folder, DDP, resume).

The engine trains any family whose adapter gives a loss; it never loads a model by path
itself (that is the adapters' business): it takes a ``LoadedModel`` and its adapter.

    >>> from yolo_prune.adapters import get_adapter, load_model
    >>> loaded = load_model("yolov7-tiny-pruned.pt")
    >>> result = finetune(loaded, get_adapter(loaded.family), data="data.yaml", epochs=30,
    ...                   batch_size=16, out_dir="runs/finetune/tiny-p50")
    >>> result.best   # runs/finetune/tiny-p50/weights/best.pt

``resume("runs/finetune/tiny-p50", adapter)`` continues an interrupted run exactly; most users
call ``yolo_prune.finetune`` (the public API), which finds the adapter and loads the files.
"""
from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import torch
import yaml
from torch import nn

from yolo_prune.devices import select_device
from yolo_prune.engine import checkpointing
from yolo_prune.engine.classes import fit_classes, same_classes
from yolo_prune.engine.distributed import (
    DistInfo,
    barrier,
    cleanup_distributed,
    init_distributed,
    rank_device,
    unwrap_model,
)
from yolo_prune.engine.hooks import TrainerCallbacks
from yolo_prune.engine.settings import TrainSettings
from yolo_prune.engine.trainer import RunPaths, Trainer
from yolo_prune.io import CheckpointError, LoadedModel, atomic_write_text
from yolo_prune.io.lock import run_lock

if TYPE_CHECKING:  # annotations only: the engine takes an adapter, it never imports the families
    from yolo_prune.adapters.base import DetectorAdapter

LOGGER = logging.getLogger(__name__)

DEFAULT_OUT_DIR = Path("runs/finetune/exp")
# Settings that may differ when a run is resumed (where it runs, not what it computes).
RESUME_OVERRIDABLE = ("device", "workers")


@dataclass
class FinetuneResult:
    """What a fine-tuning run produced."""

    out_dir: Path
    last: Path
    best: Path
    best_fitness: float | None
    epochs: int
    row: dict[str, Any] = field(default_factory=dict)  # the last epoch's results row
    model: nn.Module | None = None  # final EMA (or raw) model, float32, eval mode
    is_main: bool = True

    def __repr__(self) -> str:
        return f"FinetuneResult({self.epochs} epochs, best fitness {self.best_fitness}, best {self.best})"

    def summary(self) -> dict[str, Any]:
        """The run's outputs and last results row, JSON-ready."""
        return {"out_dir": self.out_dir, "last": self.last, "best": self.best, "best_fitness": self.best_fitness,
                "epochs": self.epochs, "results_csv": self.out_dir / "results.csv", "final": self.row}


def finetune(loaded: LoadedModel, adapter: DetectorAdapter, *, data: str | Path | None,
             out_dir: str | Path = DEFAULT_OUT_DIR, hyp: str | Path | dict | None = None,
             teacher: LoadedModel | None = None, exist_ok: bool = False, callbacks: TrainerCallbacks | None = None,
             record: dict[str, Any] | None = None, rename_classes: bool = False,
             **settings: Any) -> FinetuneResult:
    """Fine-tunes ``loaded.model`` in place on a COCO-format dataset.

    Args:
        loaded: The model (e.g. pruned, or freshly built from a cfg with the data's classes).
        adapter: Its family's adapter (loss, decode, save, distillation).
        data: Data yaml (``yolo_prune.data.load_data_config``).
        out_dir: Run folder; refused when it already holds a run, unless ``exist_ok``.
        hyp: Hyper-parameter yaml path or dict (default: the project's fine-tuning hyp).
        teacher: Unpruned model of the same family for knowledge distillation.
        exist_ok: Allow writing into an existing run folder.
        callbacks: Trainer hooks.
        record: Plain facts about the job (weights / cfg it came from, ``trust``) kept in ``args.yaml``
            and in ``last.pt`` for ``resume``.
        rename_classes: When the model has as many classes as the data under other names, train
            them under the data's names (otherwise an error). Other class counts always rebuild
            the head's class outputs for the data (box / objectness weights kept); a ``teacher``
            with other classes than the data distils boxes and objectness only.
        **settings: ``TrainSettings`` fields (epochs, img_size, batch_size, device, workers, ...).

    Returns:
        The run's paths and last results row; ``result.model`` is the final EMA model.
    """
    s = TrainSettings.from_dict(settings)
    device = select_device(s.device)
    info = init_distributed(device)
    try:
        job = _prepare_job(loaded, adapter, data=data, hyp=hyp, teacher=teacher, settings=s, out_dir=Path(out_dir),
                           exist_ok=exist_ok, info=info, record=record or {},
                           rename_classes=rename_classes)
        with _writer(job.out_dir, info, exist_ok=exist_ok):
            return _run(job, device=rank_device(device, info), info=info, callbacks=callbacks)
    finally:
        cleanup_distributed()


def resume(run: str | Path | bool, adapter: DetectorAdapter, *, out_dir: str | Path | None = None,
           trust: bool = False, teacher: LoadedModel | None = None, callbacks: TrainerCallbacks | None = None,
           **overrides: Any) -> FinetuneResult:
    """Continues an interrupted run exactly where its ``last.pt`` stopped.

    Trust comes from the caller only: nothing read from the run's files (its ``trust`` record,
    its teacher path, its run folder) can widen what is unpickled or where it is written.

    Args:
        run: The run folder or its ``weights/last.pt`` (``True``: ``out_dir``).
        adapter: The adapter of the family the run trains (it reads ``last.pt`` under its allow-list).
        out_dir: The run folder when ``run`` is ``True``.
        trust: Allow arbitrary pickled code in ``last.pt`` (the file the caller named).
        teacher: The run's teacher, loaded by the caller; None: the one the run names, loaded safely.
        callbacks: Trainer hooks.
        **overrides: Settings of the run; only ``RESUME_OVERRIDABLE`` ones may change.
    """
    path = checkpointing.resolve_resume_path(run, out_dir)
    loaded, ckpt = adapter.load_training_checkpoint(path, trust=trust)
    state = checkpointing.check_resumable(ckpt, path)
    loaded.meta.pop(checkpointing.TRAIN_STATE_KEY, None)
    record = {**state["job"], "trust": trust}
    s = TrainSettings.from_dict(_resumed_settings(dict(state["settings"]), overrides, path))
    device = select_device(s.device)
    info = init_distributed(device)
    try:
        loaded.names = list(record["names"])
        teacher = _resumed_teacher(record, adapter, teacher)
        run_dir = path.parents[1] if path.parent.name == "weights" else path.parent  # where the file is, only
        job = _Job(loaded, adapter, Path(record["data"]), dict(state["hyp"]), s, run_dir, teacher, record,
                   resume_ckpt=ckpt)
        with _writer(run_dir, info, exist_ok=True):
            if info.is_main:
                LOGGER.info("resuming %s from epoch %d/%d", path, int(ckpt["epoch"]) + 2, s.epochs)
            return _run(job, device=rank_device(device, info), info=info, callbacks=callbacks)
    finally:
        cleanup_distributed()


def _resumed_teacher(record: dict[str, Any], adapter: DetectorAdapter,
                     given: LoadedModel | None) -> LoadedModel | None:
    """The caller's teacher, else the one the run names, under the safe loader (never trusted from a file)."""
    recorded = record.get("teacher")
    if given is not None:
        if not recorded:
            raise ValueError("this run was trained without a teacher; drop --teacher to resume it, or start a new "
                             "run to distil")
        if given.source is not None and Path(given.source).resolve() != Path(recorded).resolve():
            LOGGER.warning("resuming with the teacher %s; the run was started with %s", given.source, recorded)
        return given
    if not recorded:
        return None
    path = _existing(recorded, "--teacher")
    try:
        return adapter.load(path, trust=False)
    except CheckpointError as err:
        raise CheckpointError(f"the run's teacher {path} (named in its last.pt) was refused by the safe loader, and "
                              f"trust is never taken from a run's files: if you trust it, pass --teacher {path} "
                              f"--trust-checkpoint with --resume ({err})") from None


def _resumed_settings(values: dict[str, Any], overrides: dict[str, Any], path: Path) -> dict[str, Any]:
    for key, value in overrides.items():
        if value is None or value == values.get(key):
            continue
        if key not in RESUME_OVERRIDABLE:
            raise ValueError(f"{key}={value!r} cannot change when resuming (the run used {values.get(key)!r}); "
                             f"drop it, or start a new run with --weights {path}")
        values[key] = value
    return values


@dataclass
class _Job:
    loaded: LoadedModel
    adapter: DetectorAdapter
    data: Path
    hyp: dict
    settings: TrainSettings
    out_dir: Path
    teacher: LoadedModel | None
    record: dict  # plain description of the job, stored in checkpoints and args.yaml
    resume_ckpt: dict | None = None


def _prepare_job(loaded: LoadedModel, adapter: DetectorAdapter, *, data: str | Path | None, hyp: Any,
                 teacher: LoadedModel | None, settings: TrainSettings, out_dir: Path, exist_ok: bool,
                 info: DistInfo, record: dict[str, Any], rename_classes: bool = False) -> _Job:
    from yolo_prune.data import load_data_config
    from yolo_prune.engine.hyp import load_hyp, validate_hyp

    if data is None:
        raise ValueError("no data given: pass --data path/to/data.yaml")
    check_run_dir(out_dir, exist_ok=exist_ok)  # fail before the slow parts; write nothing yet
    barrier(info)  # every rank has checked before rank 0 writes: they all fail alike or none does
    names = load_data_config(data).names
    hyp = default_hyp_path() if hyp is None else hyp
    hyp_dict = validate_hyp(dict(hyp), source="hyp dict") if isinstance(hyp, dict) else load_hyp(hyp)
    note = fit_classes(loaded, adapter, names, rename=rename_classes, seed=settings.seed)
    settings.img_size = _round_to_stride(settings.img_size, loaded)
    if teacher is not None:
        classes = same_classes(teacher.names, names)
        if not classes:
            note = (note + "; " if note else "") + (
                f"the --teacher predicts other classes ({teacher.nc}: {teacher.names[:3]}...), so it distils "
                f"boxes and objectness only")
        adapter.distill_loss(loaded.model, teacher.model, hyp_dict, classes=classes)  # a family without one refuses
    if note and info.is_main:
        LOGGER.warning(note)
    plain = {"weights": loaded.source, **record, "data": Path(data).resolve(),
             "hyp": None if isinstance(hyp, dict) else hyp, "teacher": teacher.source if teacher else None,
             "family": adapter.name, "names": list(names), "out_dir": out_dir}
    plain = {k: str(v) if isinstance(v, Path) else v for k, v in plain.items()}
    return _Job(loaded, adapter, Path(data), hyp_dict, settings, out_dir, teacher, plain)


def _run(job: _Job, *, device: torch.device, info: DistInfo, callbacks: TrainerCallbacks | None) -> FinetuneResult:
    s, loaded = job.settings, job.loaded
    train_set, val_set = build_datasets(job, loaded, world_size=info.world_size)  # bad data fails before any write
    teacher, distill_fn = _distillation(job, device)
    trainer = Trainer(loaded.model, job.adapter, train_set, val_set, hyp=job.hyp, settings=s, out_dir=job.out_dir,
                      names=job.record["names"], device=device, dist_info=info, teacher=teacher,
                      distill_fn=distill_fn, callbacks=callbacks, extra_state={"job": job.record},
                      model_meta=loaded.meta)
    if info.is_main and job.resume_ckpt is None:
        write_run_config(job)
    barrier(info)  # the run folder exists before any rank looks at it
    if job.resume_ckpt is not None:
        trainer.restore(job.resume_ckpt)
    row = trainer.train()
    final = trainer.ema.ema if trainer.ema is not None else unwrap_model(trainer.model)
    final.to(memory_format=torch.contiguous_format)  # the standard layout for what comes next (prune, fuse)
    return FinetuneResult(out_dir=job.out_dir, last=trainer.paths.last, best=trainer.paths.best,
                          best_fitness=trainer.best_fitness, epochs=s.epochs, row=row, model=final.eval(),
                          is_main=info.is_main)


# -- pieces --------------------------------------------------------------------------------------
def default_hyp_path() -> Path:
    """The project's fine-tuning hyper-parameters (``configs/hyp/``)."""
    from yolo_prune.paths import HYP_DIR

    return HYP_DIR / "hyp.finetune.yaml"


def check_run_dir(out_dir: Path, *, exist_ok: bool) -> None:
    """Refuses an ``out_dir`` that already holds a run's weights unless ``exist_ok``.

    A folder whose run failed before its first checkpoint (``args.yaml`` or ``results.csv``
    only) holds nothing to lose or resume: it is started again without ``--exist-ok``.
    """
    paths = RunPaths(out_dir)
    if exist_ok:
        return
    if paths.last.exists():
        raise FileExistsError(f"{out_dir} already holds a run ({paths.last}); pass --resume {out_dir} to continue "
                              f"it, --exist-ok to write into it, or choose another --out")
    if paths.best.exists():
        raise FileExistsError(f"{out_dir} already holds a finished run ({paths.best}); pass --exist-ok to write into "
                              f"it, or choose another --out")


@contextlib.contextmanager
def _writer(out_dir: Path, info: DistInfo, *, exist_ok: bool) -> Iterator[None]:
    """Rank 0 holds the run folder's lock while the run writes; the folder is checked again under it."""
    if not info.is_main:
        yield
        return
    with run_lock(out_dir):
        check_run_dir(out_dir, exist_ok=exist_ok)  # another run may have finished here since the first check
        yield


def write_run_config(job: _Job) -> None:
    """``args.yaml`` (the job and resolved settings) and ``hyp.yaml`` beside the outputs."""
    config = {**job.record, "settings": job.settings.to_dict()}
    atomic_write_text(yaml.safe_dump(config, sort_keys=False), job.out_dir / "args.yaml")
    atomic_write_text(yaml.safe_dump(job.hyp, sort_keys=False), job.out_dir / "hyp.yaml")


def build_datasets(job: _Job, loaded: LoadedModel, *, world_size: int) -> tuple[Any, Any]:
    """Training set (augmented, mosaic per the hyp) and validation set (letterboxed, rect batches)."""
    from yolo_prune.data import CocoDetectionDataset, DataError, load_data_config

    cfg = load_data_config(job.data)
    s = job.settings
    stride = _max_stride(loaded)
    train_images, train_ann = cfg.split("train")  # a clear DataError when the yaml has no train split
    train = CocoDetectionDataset(train_images, train_ann, img_size=s.img_size, augment=True, hyp=job.hyp,
                                 batch_size=s.batch_size // world_size, stride=stride)
    val = None
    if s.val and cfg.val_images is not None:
        val_batch = s.val_batch_size or 2 * (s.batch_size // world_size)
        val = CocoDetectionDataset(cfg.val_images, cfg.val_ann, img_size=s.img_size, augment=False, rect=True,
                                   batch_size=val_batch, stride=stride, pad=0.5)
        if not val.n_boxes:  # COCO mAP of an empty ground truth is -1: fail now, not after the first epoch
            raise DataError(f"{cfg.val_ann} has no annotations, so validation cannot score anything; fix the val "
                            f"json or pass --no-val")
    for dataset in (train, val):
        if dataset is not None and list(dataset.names) != list(job.record["names"]):
            raise DataError(f"{job.data} names the classes {list(job.record['names'])} but {dataset.ann_file} calls "
                            f"them {list(dataset.names)} (class-index order); make them agree, or drop 'names:' from "
                            f"the data yaml to use the json's")
    return train, val


def _distillation(job: _Job, device: torch.device) -> tuple[nn.Module | None, Any]:
    if job.teacher is None:
        return None, None
    teacher = job.teacher.model.to(device).float().eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    classes = same_classes(job.teacher.names, job.record["names"])  # else boxes and objectness only
    return teacher, job.adapter.distill_loss(job.loaded.model, teacher, job.hyp, weight=job.settings.distill_weight,
                                             classes=classes)


def _existing(path: str | Path, flag: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{flag} {path} does not exist; pass the unpruned checkpoint")
    return path


def _max_stride(loaded: LoadedModel) -> int:
    return max(int(max(loaded.stride)) if loaded.stride else 32, 32)


def _round_to_stride(img_size: int, loaded: LoadedModel) -> int:
    stride = _max_stride(loaded)
    rounded = int(math.ceil(img_size / stride) * stride)
    if rounded != img_size:
        LOGGER.warning("img_size %d is not a multiple of the model stride %d; using %d", img_size, stride, rounded)
    return rounded
