"""Prune recipes: the settings of one pruning job as a small YAML file.

A recipe says how much to prune and where, so that a ratio allocation found once (by
``yolo-prune sensitivity``) can be applied again with ``scripts/prune.py --recipe``:

.. code-block:: yaml

    importance: l2
    pruning_ratio: 0.0          # groups no glob below matches keep this ratio
    layer_ratios:               # {module-name glob: ratio}; a group's root conv name is a valid glob
      model.0.conv: 0.25
      model.7[5-9]*: 0.5
    global_pruning: false
    round_to: 8
    target: {metric: gmacs, value: 4.4}                 # what the recipe was made to reach
    provenance: {created_by: yolo-prune sensitivity}   # how it was made (free form)

The pruning keys are exactly ``prune_model``'s keyword arguments; ``None`` (or leaving a key
out) means ``prune_model``'s default, except ``pruning_ratio``, which a recipe must state so
that a recipe of layer ratios never prunes everything else at the default 0.5 by surprise.
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from yolo_prune.io import atomic_write_text
from yolo_prune.paths import PRUNE_RECIPES_DIR
from yolo_prune.pruning.importance import IMPORTANCES
from yolo_prune.registry import unknown_name_message


class RecipeError(ValueError):
    """A recipe file is missing, malformed or names something unknown; the message says the fix."""


@dataclass
class Recipe:
    """A prune recipe (see the module docstring for the file format).

    Attributes:
        pruning_ratio: Ratio of every group that no ``layer_ratios`` glob matches.
        importance: Criterion name (``yolo_prune.pruning.IMPORTANCES``).
        layer_ratios: ``{module-name glob: ratio}`` (``prune_model``'s ``layer_ratios``).
        global_pruning: Rank channels across groups.
        max_pruning_ratio: No layer loses more than this fraction.
        round_to: Channel counts stay multiples of this.
        min_channels: No group keeps fewer output channels.
        iterative_steps: Reach the ratios in this many re-ranked steps.
        seed: Seeds random criteria.
        name: Short name (defaults to the file stem when loaded).
        description: One line for humans.
        target: What the recipe was built to reach, e.g. ``{metric: gmacs, value: 4.4}``.
        provenance: How it was built (scan file, model, date, predicted mAP drop ...).
    """

    pruning_ratio: float
    importance: str | None = None
    layer_ratios: dict[str, float] = field(default_factory=dict)
    global_pruning: bool | None = None
    max_pruning_ratio: float | None = None
    round_to: int | None = None
    min_channels: int | None = None
    iterative_steps: int | None = None
    seed: int | None = None
    name: str | None = None
    description: str | None = None
    target: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_values(self)

    def prune_kwargs(self) -> dict[str, Any]:
        """The keyword arguments for ``prune_model`` (unset keys left out: its defaults apply)."""
        kwargs = {k: getattr(self, k) for k in PRUNE_KEYS if getattr(self, k) is not None}
        kwargs["layer_ratios"] = dict(self.layer_ratios)
        return kwargs

    def to_dict(self) -> dict[str, Any]:
        """Plain values in file order, without unset (None / empty) entries."""
        values = dataclasses.asdict(self)
        return {k: v for k, v in values.items() if v is not None and v != {}}


# Keys passed to prune_model, and keys that only describe the recipe.
PRUNE_KEYS = ("importance", "pruning_ratio", "layer_ratios", "global_pruning", "max_pruning_ratio", "round_to",
              "min_channels", "iterative_steps", "seed")
INFO_KEYS = ("name", "description", "target", "provenance")


def recipe_from_dict(values: dict[str, Any], *, source: str = "recipe") -> Recipe:
    """Builds a ``Recipe`` from plain values; an unknown key is an error naming the close match."""
    if not isinstance(values, dict):
        raise RecipeError(f"{source} must be a YAML mapping of settings such as 'pruning_ratio: 0.3', "
                          f"got {type(values).__name__}")
    known = PRUNE_KEYS + INFO_KEYS
    for key in values:
        if key not in known:
            raise RecipeError(f"{source}: {unknown_name_message('recipe key', str(key), known)}")
    if "pruning_ratio" not in values:
        raise RecipeError(f"{source} has no 'pruning_ratio': state the ratio of the groups no layer_ratios glob "
                          f"matches (0.0 prunes only the listed layers)")
    values = {k: v for k, v in values.items() if v is not None or k == "pruning_ratio"}
    try:
        return Recipe(**values)
    except (TypeError, ValueError) as err:
        raise RecipeError(f"{source}: {err}") from None


def read_recipe(path: str | Path) -> Recipe:
    """Reads a recipe file (a path, or the name of one in ``configs/prune/``)."""
    path = resolve_recipe_path(path)
    try:
        values = yaml.safe_load(path.read_text())
    except UnicodeDecodeError:
        raise RecipeError(f"recipe {path} is not a text file (a checkpoint?); pass a recipe .yaml such as "
                          f"configs/prune/uniform-30.yaml") from None
    except yaml.YAMLError as err:  # safe_load refuses python tags: a recipe cannot construct objects
        raise RecipeError(f"recipe {path} is not valid YAML: {err}") from None
    recipe = recipe_from_dict(values, source=f"recipe {path}")
    if recipe.name is None:
        recipe.name = path.stem
    return recipe


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Reads a recipe and returns ``prune_model`` keyword arguments.

    Example:
        >>> result = prune_model(model, adapter, img_size=640, **load_recipe("uniform-30"))
    """
    return read_recipe(path).prune_kwargs()


def save_recipe(recipe: Recipe, path: str | Path, *, header: str | None = None) -> Path:
    """Writes ``recipe`` as YAML atomically (with an optional comment header); returns the path."""
    text = yaml.safe_dump(_plain(recipe.to_dict()), sort_keys=False, default_flow_style=False)
    lines = [f"# {line}".rstrip() for line in (header or "").splitlines()]
    return atomic_write_text("\n".join([*lines, text]) if lines else text, path)


def resolve_recipe_path(path_or_name: str | Path) -> Path:
    """A recipe path as given, else ``configs/prune/<name>.yaml``; a miss lists the shipped ones."""
    path = Path(path_or_name)
    if path.is_file():
        return path
    if path.parent == Path("."):  # a bare name: look among the shipped recipes
        for candidate in (PRUNE_RECIPES_DIR / path.name, PRUNE_RECIPES_DIR / f"{path.name}.yaml"):
            if candidate.is_file():
                return candidate
    shipped = sorted(p.stem for p in PRUNE_RECIPES_DIR.glob("*.yaml"))
    close = difflib.get_close_matches(path.stem, shipped, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise RecipeError(f"recipe {str(path_or_name)!r} not found (neither a file nor a recipe in "
                      f"{PRUNE_RECIPES_DIR}).{hint} Shipped recipes: {', '.join(shipped) or 'none'}")


def _check_values(recipe: Recipe) -> None:
    """Types and ranges, checked when the recipe is read rather than deep inside pruning."""
    _check_ratio("pruning_ratio", recipe.pruning_ratio)
    if recipe.importance is not None and recipe.importance not in IMPORTANCES:
        raise ValueError(unknown_name_message("importance", recipe.importance, IMPORTANCES.names()))
    if not isinstance(recipe.layer_ratios, dict):
        raise ValueError(f"layer_ratios must map module-name globs to ratios, e.g. {{'model.7*': 0.3}}, "
                         f"got {recipe.layer_ratios!r}")
    for pattern, ratio in recipe.layer_ratios.items():
        _check_ratio(f"layer_ratios[{pattern!r}]", ratio)
    if recipe.max_pruning_ratio is not None and not 0.0 < _number("max_pruning_ratio", recipe.max_pruning_ratio) <= 1:
        raise ValueError(f"max_pruning_ratio must be in (0, 1], got {recipe.max_pruning_ratio}")
    for key in ("round_to", "min_channels", "iterative_steps"):
        value = getattr(recipe, key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
    if recipe.global_pruning is not None and not isinstance(recipe.global_pruning, bool):
        raise ValueError(f"global_pruning must be true or false, got {recipe.global_pruning!r}")
    for key in ("target", "provenance"):
        if not isinstance(getattr(recipe, key), dict):
            raise ValueError(f"{key} must be a mapping, got {getattr(recipe, key)!r}")


def _check_ratio(key: str, value: Any) -> None:
    if not 0.0 <= _number(key, value) < 1.0:
        raise ValueError(f"{key} must be in [0, 1), got {value}; e.g. 0.3 removes 30% of the channels")


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key} must be a number, got {value!r}")
    return float(value)


def _plain(obj: Any) -> Any:
    """Paths, tuples and numpy / torch scalars -> plain YAML-safe values."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    return obj
