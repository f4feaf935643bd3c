"""Every default of the pruning jobs in one place: ``PruneSettings`` and ``SensitivitySettings``.

The library functions (``prune_model``, ``scan_sensitivity``, ``allocate`` ...) read their
keyword defaults from here, and so do the command-line help texts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from yolo_prune.evaluation.settings import EvalSettings
from yolo_prune.settings import IMG_SIZE, ModelSourceSettings

PRUNE_MODES = ("channel", "unstructured")
SPARSITY_SCOPES = ("layer", "global")
SCORE_METRICS = ("map50_95", "map50", "map75")


@dataclass
class PruneSettings(ModelSourceSettings):
    """Resolved settings of one prune job (``yolo-prune prune``; written next to the pruned checkpoint).

    Attributes:
        pruning_ratio: Fraction of channels removed per group, in [0, 1).
        importance: Channel criterion (``yolo_prune.pruning.IMPORTANCES``).
        global_pruning: Rank channels across all groups instead of within each.
        round_to: Keep channel counts multiples of this (None: no rounding).
        max_pruning_ratio: No layer loses more than this fraction.
        min_channels: No group keeps fewer output channels (rounded up to ``round_to``); a warning
            gives the achieved reduction when this holds groups back from the ratio.
        layer_ratios: ``{module-name glob: ratio}`` overriding ``pruning_ratio``.
        recipe: A prune recipe yaml or a name in ``configs/prune/``; replaces the ratio settings.
        iterative_steps: Reach the ratio in this many steps (with ``data``: a short fine-tune between).
        compensate: Data yaml: before channels go, refit every conv that read them by least squares
            to the inputs it keeps, on the first ``calibration_images`` train images
            (``yolo_prune.pruning.compensation``); keeps much of the accuracy before fine-tuning.
        calibration_images: Train images that fit the compensation.
        data: Data yaml: iterative pruning fine-tunes on its train split and scores on its val split.
        epochs_per_step: Fine-tune epochs after each step (with ``data``).
        workers: Data-loading processes of those fine-tunes and of the scoring between steps.
        device: Device of the latency measurement and of the fine-tunes between steps (``cpu``, ``0``,
            ``''``: GPU if any); the pruning itself runs on the CPU, where the model is loaded.
        rename_classes: With ``data``: the model has as many classes as the data under other names;
            train them under the data's names (other counts always get a new class head).
        mode: ``channel`` removes whole channels; ``unstructured`` zeroes single weights (a contrast).
        sparsity: Fraction of weights zeroed (``mode="unstructured"``).
        scope: Unstructured: the same sparsity per ``layer``, or one ``global`` threshold.
        img_size: Input size for tracing, MACs and latency.
        seed: Seeds the random criterion and synthetic batches.
        dry_run: Only list the pruning groups; change and write nothing.
        out: Pruned checkpoint path (None: beside ``weights``, named after what was applied).
        force: Overwrite an existing ``out``.
        latency: Measure the fused batch-1 CPU latency before and after.
    """

    pruning_ratio: float = 0.5
    importance: str = "l2"
    global_pruning: bool = False
    round_to: int | None = None
    max_pruning_ratio: float = 1.0
    min_channels: int = 4
    layer_ratios: dict[str, float] = field(default_factory=dict)
    recipe: str | None = None
    iterative_steps: int = 1
    compensate: Path | None = None
    calibration_images: int = 128
    data: Path | None = None
    epochs_per_step: int = 1
    workers: int = 2
    device: str = "cpu"
    rename_classes: bool = False
    mode: str = "channel"
    sparsity: float = 0.5
    scope: str = "layer"
    img_size: int = IMG_SIZE
    seed: int = 0
    dry_run: bool = False
    out: Path | None = None
    force: bool = False
    latency: bool = True


@dataclass
class SensitivitySettings(ModelSourceSettings):
    """Resolved settings of one sensitivity scan and allocation (``yolo-prune sensitivity``).

    Attributes:
        data: Data yaml; its ``split`` scores every scan point.
        split: ``val`` or ``train`` (unaugmented; keeps val unseen by the allocation).
        max_images: Score on the first N images of that split (speed).
        metric: Score of each point (``map50_95``, ``map50``, ``map75``).
        batch_size: Evaluation batch size.
        device: Device of evaluation and latency (``''``: GPU if any).
        workers: Data-loading processes.
        ratios: Ratios tried per unit, each in (0, 1).
        units: ``group``, ``stride``, or a yaml of ``{stage name: [module globs]}``.
        importance: Channel criterion.
        round_to: Keep channel counts multiples of this.
        min_channels: No group keeps fewer output channels, in the scan, the allocation and its
            recipe (None: the pruner's default).
        img_size: Input size of evaluation, tracing and MACs.
        latency: Also measure the fused latency of every point.
        from_scan: Skip the scan: allocate from this ``sensitivity.json``.
        target_gmacs, target_params_m, target_latency_ms: Allocate a recipe reaching this value.
        reduction: Or reach baseline / ``reduction`` of ``reduction_metric``.
        reduction_metric: ``gmacs``, ``params_m`` or ``latency_ms``.
        tolerance: Relative tolerance of the target.
        step: Ratio grid of the allocation.
        max_ratio: No unit above this ratio (None: no cap).
        recipe_out: Recipe yaml to write (None: ``<out>/recipe.yaml``).
        out: Output folder (None: ``runs/sensitivity/<model>``).
        force: Overwrite existing outputs.
    """

    data: Path | None = None
    split: str = "val"
    max_images: int | None = 100
    metric: str = "map50_95"
    batch_size: int = EvalSettings.batch_size
    device: str = EvalSettings.device
    workers: int = EvalSettings.workers
    ratios: tuple[float, ...] = (0.2, 0.4, 0.6)
    units: str = "group"
    importance: str = PruneSettings.importance
    round_to: int | None = None
    min_channels: int | None = None
    img_size: int = IMG_SIZE
    latency: bool = False
    from_scan: Path | None = None
    target_gmacs: float | None = None
    target_params_m: float | None = None
    target_latency_ms: float | None = None
    reduction: float | None = None
    reduction_metric: str = "gmacs"
    tolerance: float = 0.05
    step: float = 0.05
    max_ratio: float | None = None
    recipe_out: Path | None = None
    out: Path | None = None
    force: bool = False


PRUNE_DEFAULTS = PruneSettings()
SENSITIVITY_DEFAULTS = SensitivitySettings()
