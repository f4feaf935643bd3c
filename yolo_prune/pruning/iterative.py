"""Iterative pruning: reach the final widths in N steps with a short fine-tune after each.

Removing many channels at once can destroy features the remaining ones depend on; pruning a
little, letting the network recover, and pruning again usually keeps more accuracy at the
same final size. A dry run with the final settings fixes every group's final width; step
``k`` of ``N`` then leaves ``start - (start - final) * k / N`` channels in each group, ranked
again on the freshly fine-tuned weights, so the last step lands exactly on the one-shot widths.

Fine-tuning and scoring are injected (``finetune_fn``, ``score_fn``) so the loop runs with
the family's fine-tuning and COCO mAP in the prune job (``yolo_prune.jobs.iterative``), and
with cheap stand-ins in tests.
"""
from __future__ import annotations

import copy
import dataclasses
import glob
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch
import torch_pruning as tp
from torch import nn

from yolo_prune.io import atomic_path, atomic_write_json
from yolo_prune.pruning.pruner import PruningError, conv_out_channels, prune_model
from yolo_prune.pruning.settings import PRUNE_DEFAULTS
from yolo_prune.settings import IMG_SIZE

if TYPE_CHECKING:  # annotations only: generic code takes an adapter, it never imports the families
    from yolo_prune.adapters.base import DetectorAdapter

LOGGER = logging.getLogger(__name__)

# finetune_fn(model, step) -> the fine-tuned model (the same object or a new one, e.g. best.pt's)
FinetuneFn = Callable[[nn.Module, int], nn.Module]
ScoreFn = Callable[[nn.Module], float]


@dataclass
class StepRecord:
    """The model after one step (step 0: the unpruned start)."""

    step: int
    pruning_ratio: float  # cumulative ratio of the original channels removed (the base ratio's schedule)
    gmacs: float
    params_m: float
    score_pruned: float | None  # right after pruning, before fine-tuning
    score: float | None  # after this step's fine-tune
    note: str | None = None


@dataclass
class IterativeResult:
    """The final model and the curve of score and size over the steps."""

    model: nn.Module
    steps: list[StepRecord] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Settings and steps as plain values (``iterative.json``)."""
        return {"settings": self.settings, "steps": [dataclasses.asdict(s) for s in self.steps]}

    def save(self, out_dir: str | Path, *, metric: str = "score") -> dict[str, Path]:
        """Writes ``iterative.json`` and ``iterative.png`` (score vs GMACs after each step)."""
        out_dir = Path(out_dir)
        return {"json": atomic_write_json(self.to_dict(), out_dir / "iterative.json"),
                "png": plot_iterative(self, out_dir / "iterative.png", metric=metric)}


def iterative_prune(model: nn.Module, adapter: DetectorAdapter, *, steps: int, finetune_fn: FinetuneFn | None,
                    score_fn: ScoreFn | None = None, img_size: int = IMG_SIZE, pruning_ratio: float = PRUNE_DEFAULTS.pruning_ratio,
                    layer_ratios: Mapping[str, float] | None = None, score_before_finetune: bool = True,
                    progress: Callable[[str], None] | None = LOGGER.info, **prune_settings: Any) -> IterativeResult:
    """Prunes ``model`` in ``steps`` equal steps towards the final ratios, fine-tuning after each.

    The final width of every group is fixed up front by a dry run with the final settings (so
    the result has exactly the one-shot channel counts, also under ``global_pruning`` or
    ``round_to``); each step then removes its share of every group's channels, re-ranking the
    channels by importance on the fine-tuned weights.

    Args:
        model: The float32 model to prune (pruned in place; the fine-tuned model is returned).
        adapter: Its adapter.
        steps: Number of prune + fine-tune rounds (1 = one-shot then fine-tune).
        finetune_fn: ``(model, step) -> model``; None skips fine-tuning (then only the curve of
            one-shot damage is recorded).
        score_fn: ``model -> score`` recorded after every step (e.g. mAP50-95); None skips scoring.
        img_size: Tracing / MAC-counting size.
        pruning_ratio: Final ratio of the groups no ``layer_ratios`` glob matches.
        layer_ratios: Final ``{glob: ratio}`` (e.g. from a recipe).
        score_before_finetune: Also score right after each pruning (shows what fine-tuning recovers).
        progress: Called with one line per step (None: silent).
        **prune_settings: Further ``prune_model`` arguments (importance, global_pruning, round_to ...).
    """
    prune_settings = _checked_settings(steps, prune_settings)
    layer_ratios = dict(layer_ratios or {})
    plan = final_widths(model, adapter, img_size=img_size, pruning_ratio=pruning_ratio, layer_ratios=layer_ratios,
                        **prune_settings)
    step_settings = {k: v for k, v in prune_settings.items() if k not in ("global_pruning", "max_pruning_ratio")}
    result = IterativeResult(model=model, settings={"steps": steps, "pruning_ratio": pruning_ratio,
                                                    "layer_ratios": layer_ratios, "img_size": img_size,
                                                    **_recorded(prune_settings)})
    result.steps.append(_record(model, 0, 0.0, img_size, None, _score(score_fn, model)))
    for k in range(1, steps + 1):
        note = _prune_step(model, adapter, img_size, _step_layer_ratios(model, plan, k, steps), step_settings)
        pruned_score = _score(score_fn, model) if score_before_finetune else None
        if finetune_fn is not None:
            model = finetune_fn(model, k)
        score = _score(score_fn, model) if finetune_fn is not None else pruned_score
        record = _record(model, k, pruning_ratio * k / steps, img_size, pruned_score, score, note)
        result.steps.append(record)
        if progress is not None:
            progress(f"step {k}/{steps}: GMACs {record.gmacs:.3f}, params {record.params_m:.3f} M, "
                     f"score {record.score_pruned} -> {record.score}" + (f" ({note})" if note else ""))
    result.model = model
    return result


def _checked_settings(steps: int, prune_settings: dict[str, Any]) -> dict[str, Any]:
    """Refuses what the schedule sets itself; calibration images become a list (every step refits on them)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if "iterative_steps" in prune_settings or "dry_run" in prune_settings:
        raise ValueError("iterative_prune schedules the steps itself: drop iterative_steps / dry_run")
    if prune_settings.get("calibration_batches") is not None:  # a generator would run dry after the first step
        prune_settings = {**prune_settings, "calibration_batches": list(prune_settings["calibration_batches"])}
    return prune_settings


def _recorded(prune_settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings as the result records them: calibration images become ``compensate: True``."""
    recorded = {k: v for k, v in prune_settings.items() if k != "calibration_batches"}
    return recorded | {"compensate": True} if "calibration_batches" in prune_settings else recorded


def final_widths(model: nn.Module, adapter: DetectorAdapter, *, img_size: int, **prune_kwargs: Any
                 ) -> dict[str, tuple[int, int]]:
    """``{group root conv: (channels now, channels after pruning with prune_kwargs)}`` from a dry run."""
    dry = prune_model(copy.deepcopy(model), adapter, img_size=img_size, dry_run=True, **prune_kwargs)
    return {g.root: (g.channels, g.channels - g.pruned) for g in dry.groups if g.pruned > 0}


def _step_layer_ratios(model: nn.Module, plan: Mapping[str, tuple[int, int]], step: int,
                       steps: int) -> dict[str, float]:
    """Per-root ratios leaving ``start - (start - final) * step / steps`` channels in every group."""
    current = conv_out_channels(model)
    ratios = {}
    for root, (start, final) in plan.items():
        keep = start - round((start - final) * step / steps)
        if keep < current[root]:
            # the pruner keeps int(current * (1 - ratio)) channels: aim half a channel above `keep`
            ratios[glob.escape(root)] = 1.0 - (keep + 0.5) / current[root]
    return ratios


def _prune_step(model: nn.Module, adapter: DetectorAdapter, img_size: int, layer_ratios: dict[str, float],
                prune_settings: Mapping[str, Any]) -> str | None:
    """One pruning step in place; a step that can remove nothing more is recorded, not fatal."""
    if not layer_ratios:
        return "nothing to remove at this step"
    params = sum(p.numel() for p in model.parameters())
    try:
        prune_model(model, adapter, img_size=img_size, pruning_ratio=0.0, layer_ratios=layer_ratios,
                    **prune_settings)
    except PruningError as err:
        if sum(p.numel() for p in model.parameters()) != params:
            raise  # the model changed and is broken: never continue from it
        return f"nothing removed: {err}"
    return None


def _record(model: nn.Module, step: int, ratio: float, img_size: int, pruned_score: float | None,
            score: float | None, note: str | None = None) -> StepRecord:
    was_training = model.training
    example = torch.zeros(1, 3, img_size, img_size, device=next(model.parameters()).device)
    macs, params = tp.utils.count_ops_and_params(model.eval(), example)
    model.train(was_training)
    return StepRecord(step=step, pruning_ratio=round(ratio, 6), gmacs=macs / 1e9, params_m=params / 1e6,
                      score_pruned=pruned_score, score=score, note=note)


def _score(score_fn: ScoreFn | None, model: nn.Module) -> float | None:
    return None if score_fn is None else float(score_fn(model))


def plot_iterative(result: IterativeResult, path: str | Path, *, metric: str = "score") -> Path:
    """Score after fine-tuning (solid) and right after pruning (dashed) against GMACs, per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    rows = result.steps
    tuned = [(r.gmacs, r.score) for r in rows if r.score is not None]
    pruned = [(r.gmacs, r.score_pruned) for r in rows if r.score_pruned is not None]
    if tuned:
        ax.plot(*zip(*tuned, strict=True), marker="o", label="after fine-tune")
    if pruned:
        ax.plot(*zip(*pruned, strict=True), marker="x", ls="--", label="after pruning")
    for r in rows:
        if r.score is not None:
            ax.annotate(str(r.step), (r.gmacs, r.score), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.invert_xaxis()  # steps go right: fewer GMACs
    ax.set_xlabel("GMACs")
    ax.set_ylabel(metric)
    ax.set_title(f"Iterative pruning in {len(rows) - 1} steps")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(path)
