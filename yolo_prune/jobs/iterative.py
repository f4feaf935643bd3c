"""The iterative prune job: prune and fine-tune in steps with the family's trainer, scored by COCO mAP."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from torch import nn

from yolo_prune.adapters import DetectorAdapter, get_adapter
from yolo_prune.data import load_data_config
from yolo_prune.engine.classes import fit_classes
from yolo_prune.io import LoadedModel
from yolo_prune.pruning.iterative import FinetuneFn, IterativeResult, iterative_prune
from yolo_prune.pruning.sensitivity import make_map_score_fn
from yolo_prune.pruning.settings import SENSITIVITY_DEFAULTS
from yolo_prune.settings import IMG_SIZE

LOGGER = logging.getLogger(__name__)


def run_iterative(loaded: LoadedModel, *, data: str | Path, steps: int, epochs_per_step: int, out_dir: str | Path,
                  img_size: int = IMG_SIZE, metric: str = SENSITIVITY_DEFAULTS.metric, max_images: int | None = None,
                  prune_kwargs: Mapping[str, Any] | None = None, rename_classes: bool = False,
                  **train_settings: Any) -> IterativeResult:
    """Prunes and fine-tunes ``steps`` times, scoring on the val split; writes the results into ``out_dir``.

    ``out_dir`` receives ``final.pt`` (the family's format), ``iterative.json``, ``iterative.png``
    and one run folder per step (``step<k>``).

    Args:
        loaded: The model to prune (``loaded.model`` is replaced by the final model).
        data: Data yaml (train split fine-tunes, val split scores).
        steps: Prune / fine-tune rounds.
        epochs_per_step: Fine-tune epochs after each pruning.
        out_dir: Output folder.
        img_size: Training, evaluation and tracing size.
        metric: Score recorded per step (``map50_95``, ``map50``).
        max_images: Score on the first N val images (None: all).
        prune_kwargs: ``prune_model`` arguments (``pruning_ratio``, ``layer_ratios`` ... e.g. a recipe).
        rename_classes: The model has as many classes as the data under other names: take the data's.
            Other class counts always get a new class head (before the first step), as ``finetune`` does.
        **train_settings: Fine-tuning settings for every step (batch_size, device, workers ...).
    """
    out_dir = Path(out_dir)
    adapter = get_adapter(loaded.family)
    note = fit_classes(loaded, adapter, load_data_config(data).names, rename=rename_classes,
                       seed=int((prune_kwargs or {}).get("seed", 0)))
    if note:
        LOGGER.info("iterative pruning: %s", note)
    score_fn = make_map_score_fn(loaded, adapter, data, img_size=img_size, max_images=max_images, metric=metric,
                                 batch_size=int(train_settings.get("batch_size") or SENSITIVITY_DEFAULTS.batch_size),
                                 device=str(train_settings.get("device") or SENSITIVITY_DEFAULTS.device),
                                 workers=int(train_settings.get("workers", SENSITIVITY_DEFAULTS.workers)))
    finetune_fn = step_finetune_fn(loaded, adapter, data=data, out_dir=out_dir, epochs=epochs_per_step,
                                   img_size=img_size, **train_settings)
    result = iterative_prune(loaded.model, adapter, steps=steps, finetune_fn=finetune_fn, score_fn=score_fn,
                             img_size=img_size, **dict(prune_kwargs or {}))
    result.settings.update({"metric": metric, "epochs_per_step": epochs_per_step, "data": str(data)})
    loaded.model = result.model.cpu()
    adapter.save(loaded, out_dir / "final.pt")
    result.save(out_dir, metric=metric)
    return result


def step_finetune_fn(loaded: LoadedModel, adapter: DetectorAdapter, *, data: str | Path, out_dir: str | Path,
                     epochs: int, callbacks: Any = None, **train_settings: Any) -> FinetuneFn:
    """A ``finetune_fn`` running the family's ``finetune`` for ``epochs`` after each step.

    Each step trains in ``out_dir/step<k>`` and continues from the (EMA) weights it ends with.

    Args:
        loaded: The model being pruned (its family, class names and strides label each step's run).
        adapter: Its adapter.
        data: Data yaml.
        out_dir: Parent folder of the per-step runs.
        epochs: Fine-tune epochs per step (the budget of the whole job is ``steps * epochs``).
        callbacks: Trainer hooks (e.g. ``SparseTrainingCallback``), shared by every step.
        **train_settings: Fine-tuning settings (img_size, batch_size, device, workers, ...).
    """

    def run(model: nn.Module, step: int) -> nn.Module:
        job = LoadedModel(model=model, family=loaded.family, names=list(loaded.names), stride=list(loaded.stride),
                          cfg=loaded.cfg, source=loaded.source, meta=dict(loaded.meta))
        result = adapter.finetune(job, data, out_dir=Path(out_dir) / f"step{step}", epochs=epochs, exist_ok=True,
                                  callbacks=callbacks, **train_settings)
        return result.model.float()

    return run
