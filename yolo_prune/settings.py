"""What every job's settings share: the common input size and the settings machinery.

Each job has one typed settings dataclass holding every default of that job once
(``PruneSettings``, ``SensitivitySettings`` in ``yolo_prune.pruning.settings``,
``EvalSettings`` in ``yolo_prune.evaluation.settings``, ``BenchmarkSettings`` in
``yolo_prune.benchmark.settings``, ``TrainSettings`` in ``yolo_prune.engine.settings`` and the
main job's ``PipelineSettings`` in ``yolo_prune.pipeline``). The flow is YAML or flags -> a
dataclass (``from_dict``: ``None`` means the default, an unknown key is an error naming the
close match) -> plain keyword arguments of the library functions, whose own defaults read
the same dataclass. Every job writes its resolved settings next to its outputs (``save``).
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml

from yolo_prune.io.atomic import atomic_write_text
from yolo_prune.registry import unknown_name_message

IMG_SIZE = 640  # the square input size YOLO checkpoints are trained and compared at; every job's default

S = TypeVar("S", bound="JobSettings")

# What a setting of that name must be, in every job: checked when the settings are made, so a
# bad value fails in one line before any model is loaded or run (``--conf nan``, ``--img 0``).
Rule = tuple[Callable[[float], bool], str]
_AT_LEAST_1: Rule = (lambda v: v >= 1, "at least 1")
_ZERO_OR_MORE: Rule = (lambda v: v >= 0, "0 or more")
_RATIO: Rule = (lambda v: 0 <= v < 1, "in [0, 1) (e.g. 0.3 removes 30% of the channels)")

FIELD_RULES: dict[str, Rule] = {
    "img_size": (lambda v: v >= 32 and v % 32 == 0, "a multiple of 32, at least 32 (e.g. 640)"),
    "conf_thres": (lambda v: 0 <= v < 1, "in [0, 1) (e.g. 0.001 to measure mAP, 0.25 to deploy)"),
    "iou_thres": (lambda v: 0 < v <= 1, "in (0, 1] (e.g. 0.65)"),
    "max_images": (lambda v: v >= 1, "at least 1 (leave it out for all images)"),
    "bench_runs": (lambda v: v >= 0, "0 or more (0 skips the latency benchmark)"),
    "max_pruning_ratio": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "round_to": (lambda v: v >= 1, "a channel multiple of at least 1, such as 8"),
    "sparsity": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "ratio": _RATIO, "pruning_ratio": _RATIO,
    "workers": _ZERO_OR_MORE, "warmup": _ZERO_OR_MORE,
    **dict.fromkeys(("batch_size", "batch", "max_det", "runs", "min_channels", "iterative_steps", "epochs_per_step"),
                    _AT_LEAST_1),
}


@dataclasses.dataclass
class JobSettings:
    """Base of the jobs' settings dataclasses (subclasses are ``@dataclass`` too).

    Example:
        >>> @dataclasses.dataclass
        ... class MySettings(JobSettings):
        ...     ratio: float = 0.5
        >>> MySettings.from_dict({"ratio": None}).ratio
        0.5
    """

    def __post_init__(self) -> None:
        check_fields(self)

    @classmethod
    def from_dict(cls: type[S], values: dict[str, Any]) -> S:
        """Builds settings from plain values; ``None`` means the default, unknown keys are errors."""
        known = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in known:
                raise TypeError(unknown_name_message(f"{cls.__name__} setting", key, known))
        return cls(**{k: v for k, v in values.items() if v is not None})

    @classmethod
    def default(cls, name: str) -> Any:
        """The default of field ``name`` (for help texts and library signatures)."""
        for f in dataclasses.fields(cls):
            if f.name == name:
                if f.default is not dataclasses.MISSING:
                    return f.default
                if f.default_factory is not dataclasses.MISSING:
                    return f.default_factory()
                return None
        raise KeyError(unknown_name_message(f"{cls.__name__} setting", name, [f.name for f in dataclasses.fields(cls)]))

    def to_dict(self) -> dict[str, Any]:
        """Plain values (paths as strings), ready for YAML or JSON."""
        return {k: _plain(v) for k, v in dataclasses.asdict(self).items()}

    def save(self, path: str | Path) -> Path:
        """Writes the resolved settings as YAML, atomically (next to a job's outputs)."""
        return atomic_write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), path)


@dataclasses.dataclass
class ModelSourceSettings(JobSettings):
    """How a job names its model (the ``--weights``, ``--cfg``, ``--family``, ``--trust-checkpoint`` flags).

    Attributes:
        weights: A checkpoint of any registered family (recognised from the classes it pickles).
        cfg: A model cfg: the model to build when ``weights`` is None (random weights), or the
            architecture of a bare state dict in ``weights``.
        family: The detector family, when it cannot be recognised from the file or cfg.
        trust: Allow arbitrary pickled code in the checkpoint (only for files you trust).
    """

    weights: Path | None = None
    cfg: str | None = None
    family: str | None = None
    trust: bool = False


def check_fields(settings: Any) -> None:
    """Checks every field of the dataclass ``settings`` that ``FIELD_RULES`` names (None: unset, not checked)."""
    for f in dataclasses.fields(settings):
        if f.name in FIELD_RULES:
            check_value(f.name, getattr(settings, f.name))


def check_value(name: str, value: Any) -> None:
    """Checks one setting against ``FIELD_RULES[name]`` (None passes: it means the default).

    Raises:
        ValueError: the setting, its value and what it must be (NaN is never in range).
    """
    if value is None:
        return
    rule, wanted = FIELD_RULES[name]
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (number and math.isfinite(value) and rule(value)):
        raise ValueError(f"{name} must be {wanted}, got {value!r}")


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
