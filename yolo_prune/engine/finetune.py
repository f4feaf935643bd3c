"""``finetune(...)``: everything around the loop (model, data, hyp, run folder, DDP, resume).

    >>> from yolo_prune.engine import finetune
    >>> result = finetune("yolov7-tiny-pruned.pt", data="data.yaml", epochs=30, img_size=640,
    ...                   batch_size=16, out_dir="runs/finetune/tiny-p50")
    >>> result.best   # runs/finetune/tiny-p50/weights/best.pt

The same call continues an interrupted run with ``finetune(resume="runs/finetune/tiny-p50")``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from yolo_prune.adapters.base import DetectorAdapter, LoadedModel
from yolo_prune.engine import checkpointing
from yolo_prune.engine.classes import fit_classes, same_classes
from yolo_prune.engine.distributed import (DistInfo, barrier, cleanup_distributed, init_distributed,
                                           rank_device, select_device, unwrap_model)
from yolo_prune.engine.hooks import TrainerCallbacks
from yolo_prune.engine.settings import TrainSettings
from yolo_prune.engine.trainer import RunPaths, Trainer
from yolo_prune.io import atomic_write_text

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
        return {"out_dir": self.out_dir, "last": self.last, "best": self.best, "best_fitness": self.best_fitness,
                "epochs": self.epochs, "results_csv": self.out_dir / "results.csv", "final": self.row}


def finetune(model: LoadedModel | str | Path | None = None, *, data: str | Path | None = None,
             cfg: str | Path | None = None, out_dir: str | Path = "runs/finetune/exp",
             hyp: str | Path | dict | None = None, teacher: LoadedModel | str | Path | None = None,
             resume: str | Path | bool | None = None, exist_ok: bool = False, family: str | None = None,
             trust: bool = False, callbacks: TrainerCallbacks | None = None, rename_classes: bool = False,
             **settings: Any) -> FinetuneResult:
    """Fine-tunes a model (or trains one from ``cfg``) on a COCO-format dataset.

    Args:
        model: A ``LoadedModel`` or a checkpoint path; None with ``cfg`` builds a fresh model.
        data: Data yaml (``yolo_prune.data.load_data_config``).
        cfg: Model cfg to build when ``model`` is None (nc taken from the data).
        out_dir: Run folder; refused when it already holds a run, unless ``exist_ok``.
        hyp: Hyper-parameter yaml path or dict (default: the project's fine-tuning hyp).
        teacher: Unpruned model (or path) for knowledge distillation.
        resume: A run folder or its ``weights/last.pt`` (``True``: ``out_dir``) to continue.
        exist_ok: Allow writing into an existing run folder.
        family: Detector family when it cannot be recognised from the file.
        trust: Allow arbitrary pickled code in checkpoint files.
        callbacks: Trainer hooks.
        rename_classes: When the model has as many classes as the data under other names, train
            them under the data's names (otherwise an error). Other class counts always rebuild
            the head's class outputs for the data (box / objectness weights kept).
        **settings: ``TrainSettings`` fields (epochs, img_size, batch_size, device, workers, ...).

    A ``LoadedModel`` passed in is trained in place; ``result.model`` is the final EMA model.
    A ``teacher`` with other classes than the data distils boxes and objectness only.
    """
    if resume:
        return _resume(resume, out_dir, callbacks, trust=trust, overrides=settings)
    s = TrainSettings.from_dict(settings)
    device = select_device(s.device)
    info = init_distributed(device)
    try:
        job = _prepare_job(model, data=data, cfg=cfg, hyp=hyp, teacher=teacher, family=family, trust=trust,
                           settings=s, out_dir=Path(out_dir), exist_ok=exist_ok, info=info,
                           rename_classes=rename_classes)
        return _run(job, device=rank_device(device, info), info=info, callbacks=callbacks)
    finally:
        cleanup_distributed()


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


def _prepare_job(model: LoadedModel | str | Path | None, *, data, cfg, hyp, teacher, family, trust,
                 settings: TrainSettings, out_dir: Path, exist_ok: bool, info: DistInfo,
                 rename_classes: bool = False) -> _Job:
    from yolo_prune import api
    from yolo_prune.data import load_data_config
    from yolo_prune.engine.losses import load_hyp, validate_hyp

    if data is None:
        raise ValueError("no data given: pass --data path/to/data.yaml")
    check_run_dir(out_dir, exist_ok=exist_ok)  # fail before the slow parts; write nothing yet
    barrier(info)  # every rank has checked before rank 0 writes: they all fail alike or none does
    names = load_data_config(data).names
    hyp = default_hyp_path() if hyp is None else hyp
    hyp_dict = validate_hyp(dict(hyp), source="hyp dict") if isinstance(hyp, dict) else load_hyp(hyp)
    loaded = model if isinstance(model, LoadedModel) else api.load(model, cfg=cfg, family=family, trust=trust,
                                                                   nc=len(names))
    adapter = api.adapter_of(loaded)
    note = fit_classes(loaded, adapter, names, rename=rename_classes, seed=settings.seed)
    settings.img_size = _round_to_stride(settings.img_size, loaded)
    teacher_loaded = _load_teacher(teacher, family, trust)
    if teacher_loaded is not None and not same_classes(teacher_loaded.names, names):
        note = (note + "; " if note else "") + (
            f"the --teacher predicts other classes ({teacher_loaded.nc}: {teacher_loaded.names[:3]}...), so it "
            f"distils boxes and objectness only")
    if note and info.is_main:
        print(note)
    record = {"weights": loaded.source if isinstance(model, LoadedModel) else model, "cfg": cfg,
              "data": Path(data).resolve(),
              "hyp": None if isinstance(hyp, dict) else hyp, "teacher": _source(teacher, teacher_loaded),
              "family": loaded.family, "names": list(names), "out_dir": out_dir, "trust": trust}
    record = {k: str(v) if isinstance(v, Path) else v for k, v in record.items()}
    return _Job(loaded, adapter, Path(data), hyp_dict, settings, out_dir, teacher_loaded, record)


def _run(job: _Job, *, device: torch.device, info: DistInfo, callbacks: TrainerCallbacks | None) -> FinetuneResult:
    s, loaded = job.settings, job.loaded
    if info.is_main and job.resume_ckpt is None:
        write_run_config(job)
    barrier(info)  # the run folder exists before any rank looks at it
    train_set, val_set = build_datasets(job, loaded, world_size=info.world_size)
    teacher, distill_fn = _distillation(job, device)
    trainer = Trainer(loaded.model, job.adapter, train_set, val_set, hyp=job.hyp, settings=s, out_dir=job.out_dir,
                      names=job.record["names"], device=device, dist_info=info, teacher=teacher,
                      distill_fn=distill_fn, callbacks=callbacks, extra_state={"job": job.record},
                      model_meta=loaded.meta)
    if job.resume_ckpt is not None:
        trainer.restore(job.resume_ckpt)
    row = trainer.train()
    final = trainer.ema.ema if trainer.ema is not None else unwrap_model(trainer.model)
    return FinetuneResult(out_dir=job.out_dir, last=trainer.paths.last, best=trainer.paths.best,
                          best_fitness=trainer.best_fitness, epochs=s.epochs, row=row, model=final.eval(),
                          is_main=info.is_main)


def _resume(resume: str | Path | bool, out_dir: str | Path, callbacks: TrainerCallbacks | None, *, trust: bool,
            overrides: dict[str, Any]) -> FinetuneResult:
    path = checkpointing.resolve_resume_path(resume, out_dir)
    ckpt = checkpointing.load_training_checkpoint(path, trust=trust)
    state = checkpointing.check_resumable(ckpt, path)
    job_record = dict(state["job"])
    values = dict(state["settings"])
    for key, value in overrides.items():
        if value is None or value == values.get(key):
            continue
        if key not in RESUME_OVERRIDABLE:
            raise ValueError(f"{key}={value!r} cannot change when resuming (the run used {values.get(key)!r}); "
                             f"drop it, or start a new run with --weights {path}")
        values[key] = value
    s = TrainSettings.from_dict(values)
    device = select_device(s.device)
    info = init_distributed(device)
    try:
        from yolo_prune.adapters import get_adapter

        adapter = get_adapter(job_record["family"])
        loaded = LoadedModel(model=ckpt["model"].float(), family=adapter.name, names=job_record["names"],
                             stride=checkpointing.model_stride(ckpt["model"]), source=path,
                             meta=checkpointing.model_meta(ckpt))
        teacher = _load_teacher(job_record.get("teacher"), job_record["family"], trust or job_record["trust"])
        run_dir = path.parents[1] if path.parent.name == "weights" else Path(job_record["out_dir"])
        job = _Job(loaded, adapter, Path(job_record["data"]), dict(state["hyp"]), s, run_dir, teacher,
                   job_record, resume_ckpt=ckpt)
        if info.is_main:
            print(f"resuming {path} from epoch {int(ckpt['epoch']) + 2}/{s.epochs}")
        return _run(job, device=rank_device(device, info), info=info, callbacks=callbacks)
    finally:
        cleanup_distributed()


# -- pieces --------------------------------------------------------------------------------------
def default_hyp_path() -> Path:
    """The project's fine-tuning hyper-parameters (``configs/hyp/``)."""
    from yolo_prune.paths import HYP_DIR

    return HYP_DIR / "hyp.finetune.yaml"


def check_run_dir(out_dir: Path, *, exist_ok: bool) -> None:
    """Refuses an ``out_dir`` that already holds a run unless ``exist_ok``."""
    paths = RunPaths(out_dir)
    taken = [p for p in (paths.last, paths.results_csv, out_dir / "args.yaml") if p.exists()]
    if taken and not exist_ok:
        raise FileExistsError(f"{out_dir} already holds a run ({taken[0].name}); pass --exist-ok to write into it, "
                              f"--resume {out_dir} to continue it, or choose another --out")


def write_run_config(job: _Job) -> None:
    """``args.yaml`` (the job and resolved settings) and ``hyp.yaml`` beside the outputs."""
    config = {**job.record, "settings": job.settings.to_dict()}
    atomic_write_text(yaml.safe_dump(config, sort_keys=False), job.out_dir / "args.yaml")
    atomic_write_text(yaml.safe_dump(job.hyp, sort_keys=False), job.out_dir / "hyp.yaml")


def build_datasets(job: _Job, loaded: LoadedModel, *, world_size: int) -> tuple[Any, Any]:
    """Training set (augmented, mosaic per the hyp) and validation set (letterboxed, rect batches)."""
    from yolo_prune.data import CocoDetectionDataset, load_data_config

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
    return train, val


def _distillation(job: _Job, device: torch.device) -> tuple[nn.Module | None, Any]:
    if job.teacher is None:
        return None, None
    from yolo_prune.engine.losses import build_distill_loss

    teacher = job.teacher.model.to(device).float().eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    classes = same_classes(job.teacher.names, job.record["names"])  # else boxes and objectness only
    return teacher, build_distill_loss(job.loaded.model, teacher, job.hyp, weight=job.settings.distill_weight,
                                       classes=classes)


def _load_teacher(teacher: LoadedModel | str | Path | None, family: str | None, trust: bool) -> LoadedModel | None:
    if teacher is None or isinstance(teacher, LoadedModel):
        return teacher
    from yolo_prune import api

    if not Path(teacher).is_file():
        raise FileNotFoundError(f"--teacher {teacher} does not exist; pass the unpruned checkpoint")
    return api.load(teacher, family=family, trust=trust)


def _source(teacher: Any, loaded: LoadedModel | None) -> str | None:
    if loaded is None:
        return None
    if loaded.source is not None:
        return str(loaded.source)
    return None if isinstance(teacher, LoadedModel) else str(teacher)


def _max_stride(loaded: LoadedModel) -> int:
    return max(int(max(loaded.stride)) if loaded.stride else 32, 32)


def _round_to_stride(img_size: int, loaded: LoadedModel) -> int:
    stride = _max_stride(loaded)
    rounded = int(math.ceil(img_size / stride) * stride)
    if rounded != img_size:
        print(f"img_size {img_size} is not a multiple of the model stride {stride}; using {rounded}")
    return rounded
