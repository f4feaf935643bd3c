"""The prune job: one checkpoint in, the pruned checkpoint and a before/after report out.

Three modes share the loading, the before/after summary rows and the outputs:

* channel pruning (``prune_model``; a recipe may set the ratios),
* iterative channel pruning with a short fine-tune between steps (``settings.data`` given),
* unstructured pruning (single weights zeroed: a contrast, dense hardware does not get faster).

Outputs: ``<out>.pt`` in the family's own format, ``<out>.json`` (the report) and
``<out>.args.yaml`` (the resolved settings).
"""
from __future__ import annotations

import dataclasses
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml

from yolo_prune.adapters import DetectorAdapter, get_adapter, load_model
from yolo_prune.benchmark import BenchmarkSettings, model_summary
from yolo_prune.data.batches import calibration_batches
from yolo_prune.io import LoadedModel, atomic_write_json, atomic_write_text
from yolo_prune.pruning import PruneResult, prune_model
from yolo_prune.pruning.pruner import check_prune_settings
from yolo_prune.pruning.settings import PruneSettings

LOGGER = logging.getLogger(__name__)

# The before/after latency is a ratio on one machine: a short measurement is enough.
QUICK_LATENCY = BenchmarkSettings(batch=1, warmup=2, runs=5, nms=False)
# prune_model arguments a prune job passes through (a recipe may replace the ratio ones).
_PRUNE_KWARGS = ("importance", "pruning_ratio", "global_pruning", "layer_ratios", "max_pruning_ratio", "round_to",
                 "min_channels", "iterative_steps", "seed")


class PrunedCfgWarning(UserWarning):
    """The pruned widths cannot be written in the family's cfg: its own trainer would rebuild the unpruned model."""


def prune_loaded(loaded: LoadedModel, **settings: Any) -> PruneResult:
    """Prunes ``loaded.model`` in place (``prune_model`` settings) and records them in ``loaded.meta``.

    ``ratio`` (the CLI's name) is accepted for ``pruning_ratio``. Warns (``PrunedCfgWarning``) when
    the pruned widths have no form in the family's own cfg, naming why and how to keep them.
    """
    if "ratio" in settings:
        if "pruning_ratio" in settings:
            raise TypeError("pass the ratio once: pruning_ratio=... or ratio=..., not both")
        settings["pruning_ratio"] = settings.pop("ratio")
    result = prune_model(loaded.model, get_adapter(loaded.family), **settings)
    loaded.model = result.model
    if not result.dry_run:
        loaded.meta["pruning"] = result.summary()["settings"]
        note = cfg_note(loaded)
        if note is not None:
            warnings.warn(note, PrunedCfgWarning, stacklevel=2)
    return result


def cfg_note(loaded: LoadedModel) -> str | None:
    """None when the family's cfg can describe ``loaded.model``; else why not and how to keep its widths."""
    adapter = get_adapter(loaded.family)
    form = adapter.cfg_form(loaded.model)
    if form.cfg is not None:
        return None
    return (f"the pruned widths cannot be written in the {loaded.family} cfg ({form.reason}), so "
            f"{adapter.own_trainer_hint(False)}")


def save_cfg(loaded: LoadedModel, path: str | Path) -> Path | None:
    """Writes the family's cfg that rebuilds ``loaded.model`` (pruned widths included) as yaml.

    Returns the path, or None (nothing written) when the family's cfg cannot describe the model.
    """
    form = get_adapter(loaded.family).cfg_form(loaded.model)
    if form.cfg is None:
        return None
    return atomic_write_text(yaml.safe_dump(form.cfg, sort_keys=False), path)


def run_prune(settings: PruneSettings) -> dict[str, Any]:
    """Runs the prune job; returns its report (a dry run: the groups that would lose channels).

    Raises:
        FileNotFoundError: ``weights`` does not exist.
        FileExistsError: ``out`` exists and ``force`` is not set.
        ValueError: bad settings (the message names the value and the fix).
    """
    s = settings
    if s.weights is not None and not Path(s.weights).is_file():
        raise FileNotFoundError(f"--weights {s.weights} does not exist")
    if s.dry_run and s.mode == "unstructured":
        raise ValueError("--dry-run lists channel groups; it does not apply to --mode unstructured")
    if s.compensate is not None and s.mode == "unstructured":
        raise ValueError("--compensate refits the consumers of removed channels; --mode unstructured removes none: "
                         "drop one of them")
    kwargs = prune_kwargs(s)
    if s.mode == "channel":  # a bad ratio, recipe value or criterion fails before the model is loaded or run
        check_prune_settings({**kwargs, "img_size": s.img_size})
    out = None if s.dry_run else resolve_out_path(s, kwargs)
    if s.compensate is not None and not s.dry_run:
        kwargs["calibration_batches"] = calibration_batches(s.compensate, img_size=s.img_size,
                                                            n_images=s.calibration_images)
    loaded = load_model(s.weights, cfg=s.cfg, family=s.family, trust=s.trust)
    adapter = get_adapter(loaded.family)
    before = describe(loaded, adapter, s, file=s.weights)
    if s.mode == "unstructured":
        return _finish(s, loaded, adapter, out, before, {"unstructured": _unstructured(s, loaded, adapter)})
    if s.data is not None and not s.dry_run:
        return _finish(s, loaded, adapter, out, before, _iterative(s, loaded, out, kwargs))
    with warnings.catch_warnings():  # _finish states the same note once, in the report and the log
        warnings.simplefilter("ignore", PrunedCfgWarning)
        result = prune_loaded(loaded, img_size=s.img_size, dry_run=s.dry_run, **kwargs)
    if s.dry_run:
        return result.summary()
    return _finish(s, loaded, adapter, out, before, result.summary())


def prune_kwargs(s: PruneSettings) -> dict[str, Any]:
    """``prune_model`` keyword arguments of the settings; a ``recipe`` overrides the ratio settings."""
    kwargs = {k: getattr(s, k) for k in _PRUNE_KWARGS}
    kwargs["layer_ratios"] = dict(kwargs["layer_ratios"] or {})
    if s.recipe:
        from yolo_prune.pruning.recipe import load_recipe

        kwargs.update(load_recipe(s.recipe))
    return kwargs


def resolve_out_path(s: PruneSettings, kwargs: dict[str, Any]) -> Path:
    """The output path, refusing to overwrite the input or (without ``force``) anything else.

    The default name says what was applied: ``<stem>-pruned30.pt`` for the ratio actually used
    (a recipe's included), ``<stem>-pruned-<recipe>.pt`` for per-layer ratios, ``<stem>-sparse50.pt``
    for unstructured pruning; it lies beside ``weights`` (or in ``runs/prune`` for a cfg).
    """
    if s.out is not None:
        out = Path(s.out)
    else:
        source = Path(s.weights) if s.weights is not None else Path("runs/prune") / Path(str(s.cfg)).name
        out = source.with_name(f"{source.stem}-{applied_suffix(s, kwargs)}.pt")
    if s.weights is not None and out.resolve() == Path(s.weights).resolve():
        raise ValueError(f"--out {out} is the input checkpoint; inputs are never overwritten, choose another path")
    if out.exists() and not s.force:
        raise FileExistsError(f"{out} already exists; pass --force to overwrite it or choose another --out")
    return out


def applied_suffix(s: PruneSettings, kwargs: dict[str, Any]) -> str:
    """``pruned30`` / ``pruned-<recipe>`` / ``sparse50``: what the job applies, for file names."""
    if s.mode == "unstructured":
        return f"sparse{round(s.sparsity * 100)}"
    if kwargs.get("layer_ratios"):
        return f"pruned-{Path(str(s.recipe)).stem if s.recipe else 'layers'}"
    return f"pruned{round(kwargs['pruning_ratio'] * 100)}"


def describe(loaded: LoadedModel, adapter: DetectorAdapter, s: PruneSettings, *,
             file: str | Path | None) -> dict[str, Any]:
    """The summary row (params, GMACs, size, quick latency when ``s.latency``) without the full timing."""
    latency = dataclasses.replace(QUICK_LATENCY, device=s.device) if s.latency else None
    row = model_summary(loaded.model, s.img_size, fuse=adapter.fuse, decode=adapter.decode, file=file,
                        latency=latency)
    row.pop("timing", None)
    row["fp16_mib"] = _fp16_size_mb(loaded.model)  # one precision for every family (files may be fp16 or fp32)
    if file is None:  # built from a cfg: the size a float16 checkpoint of it would have
        row["file_mib"] = row["fp16_mib"]
    return row


def _finish(s: PruneSettings, loaded: LoadedModel, adapter: DetectorAdapter, out: Path, before: dict[str, Any],
            summary: dict[str, Any]) -> dict[str, Any]:
    """Saves the pruned model, its cfg (where there is one), its report and settings beside it.

    ``train_note`` in the report says how the family's own trainer keeps the pruned widths.
    """
    adapter.save(loaded, out)
    cfg_path = save_cfg(loaded, out.with_suffix(".yaml"))
    if cfg_path is None:
        out.with_suffix(".yaml").unlink(missing_ok=True)  # an earlier run's cfg would describe another model
    after = describe(loaded, adapter, s, file=out)
    report = {**summary, "weights": s.weights, "cfg": s.cfg, "out": out, "model_cfg": cfg_path,
              "train_note": adapter.own_trainer_hint(True) if cfg_path else cfg_note(loaded),
              "before": before, "after": after}
    atomic_write_json(report, out.with_suffix(".json"))
    s.save(out.with_suffix(".args.yaml"))
    return report


def _unstructured(s: PruneSettings, loaded: LoadedModel, adapter: DetectorAdapter) -> dict[str, Any]:
    """Zeroes single weights (made permanent): same shapes, same MACs - the contrast mode."""
    from yolo_prune.pruning.unstructured import unstructured_prune

    report = unstructured_prune(loaded.model, adapter, s.sparsity, scope=s.scope, img_size=s.img_size)
    loaded.meta["pruning"] = {"mode": "unstructured", "sparsity": s.sparsity, "scope": s.scope}
    return report


def _iterative(s: PruneSettings, loaded: LoadedModel, out: Path, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Prunes in ``iterative_steps`` rounds with ``epochs_per_step`` of fine-tuning on ``data`` between them."""
    from yolo_prune.jobs.iterative import run_iterative

    kwargs = dict(kwargs)
    steps = kwargs.pop("iterative_steps")
    run_dir = out.with_suffix("")
    result = run_iterative(loaded, data=s.data, steps=steps, epochs_per_step=s.epochs_per_step, out_dir=run_dir,
                           img_size=s.img_size, prune_kwargs=kwargs, workers=s.workers, device=s.device,
                           rename_classes=s.rename_classes)
    return {"iterative": result.to_dict(), "run_dir": run_dir}


def _fp16_size_mb(model: torch.nn.Module) -> float:
    buffer = io.BytesIO()
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}, buffer)
    return buffer.tell() / 2**20
