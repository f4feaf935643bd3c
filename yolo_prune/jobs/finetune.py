"""The fine-tuning job: load the model (or build it for the data), then the family's ``finetune``.

A run the generic engine trained is resumed through the adapter its ``last.pt`` belongs to,
so each family's file is read under that family's own allow-list.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from yolo_prune.adapters import adapter_for, get_adapter, load_model
from yolo_prune.engine import FinetuneResult, TrainerCallbacks
from yolo_prune.engine import resume as resume_run  # not to shadow the ``resume`` argument
from yolo_prune.engine.checkpointing import resolve_resume_path
from yolo_prune.engine.finetune import DEFAULT_OUT_DIR
from yolo_prune.io import LoadedModel


def finetune(model: LoadedModel | str | Path | None = None, *, data: str | Path | None = None,
             cfg: str | Path | None = None, family: str | None = None, trust: bool = False,
             out_dir: str | Path = DEFAULT_OUT_DIR, hyp: str | Path | dict | None = None,
             teacher: LoadedModel | str | Path | None = None, resume: str | Path | bool | None = None,
             exist_ok: bool = False, callbacks: TrainerCallbacks | None = None, **settings: Any) -> FinetuneResult:
    """Fine-tunes a model (or trains one from ``cfg``) on a COCO-format dataset, or resumes a run.

    Args:
        model: A ``LoadedModel`` (trained in place by the engine) or a checkpoint path; None with
            ``cfg`` builds a fresh model with the data's classes.
        data: Data yaml (``yolo_prune.data.load_data_config``).
        cfg: Model cfg to build when ``model`` is None (or the architecture of a bare state dict).
        family: Detector family when it cannot be recognised from the file or cfg.
        trust: Allow arbitrary pickled code in the checkpoint files named here (``model``, ``teacher``,
            ``resume``); nothing read from a file can turn it on.
        out_dir: Run folder; refused when it already holds a run, unless ``exist_ok``.
        hyp: Hyper-parameter yaml path or dict (default: the project's fine-tuning hyp).
        teacher: Unpruned model (or path) of the same family for knowledge distillation.
        resume: A run folder or its ``weights/last.pt`` (``True``: ``out_dir``) to continue exactly.
        exist_ok: Allow writing into an existing run folder.
        callbacks: Trainer hooks (``yolo_prune.engine.TrainerCallbacks``).
        **settings: ``TrainSettings`` fields (epochs, img_size, batch_size, device, workers, ...);
            a family with its own trainer (Ultralytics) refuses those it cannot honour.

    >>> import pathlib, tempfile, yolo_prune
    >>> from yolo_prune.data.synthetic import make_synthetic_dataset
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> data = make_synthetic_dataset(tmp / "data", n_train=4, n_val=2, img_size=64)
    >>> yolo_prune.finetune(cfg="yolov7-tiny", data=data, out_dir=tmp / "run", epochs=1, img_size=64,
    ...                     batch_size=2, workers=0, device="cpu")  # doctest: +ELLIPSIS
    FinetuneResult(1 epochs, best fitness ..., best .../run/weights/best.pt)
    """
    if resume:
        path = resolve_resume_path(resume, out_dir)
        adapter = get_adapter(family) if family else adapter_for(path)
        # trust and the teacher come from this call only, never from the run's files
        return resume_run(path, adapter, trust=trust, teacher=_teacher(teacher, family, trust), callbacks=callbacks,
                          **settings)
    if data is None:
        raise ValueError("no data given: pass --data path/to/data.yaml (or --resume to continue a run)")
    loaded = _model(model, cfg=cfg, family=family, trust=trust, data=data)
    adapter = get_adapter(loaded.family)
    # a model built from ``cfg`` has no weights file (ship_baseline.py tells such runs by this)
    weights = str(model) if isinstance(model, (str, Path)) else None if model is None else loaded.source
    record = {"weights": weights, "cfg": cfg, "trust": trust}
    return adapter.finetune(loaded, data, out_dir=out_dir, hyp=hyp, teacher=_teacher(teacher, family, trust),
                            exist_ok=exist_ok, callbacks=callbacks, record=record, **settings)


def _model(model: LoadedModel | str | Path | None, *, cfg: str | Path | None, family: str | None, trust: bool,
           data: str | Path) -> LoadedModel:
    if isinstance(model, LoadedModel):
        return model
    if model is None and cfg is None:
        raise ValueError("pass --weights path/to/model.pt to fine-tune, or --cfg to train a new model")
    nc = None
    if model is None:  # a fresh model predicts the data's classes
        from yolo_prune.data import load_data_config

        nc = len(load_data_config(data).names)
    return load_model(model, cfg=cfg, family=family, trust=trust, nc=nc)


def _teacher(teacher: LoadedModel | str | Path | None, family: str | None, trust: bool) -> LoadedModel | None:
    if teacher is None or isinstance(teacher, LoadedModel):
        return teacher
    if not Path(teacher).is_file():
        raise FileNotFoundError(f"--teacher {teacher} does not exist; pass the unpruned checkpoint")
    return load_model(teacher, family=family, trust=trust)
