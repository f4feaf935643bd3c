"""The jobs and their settings: defaults live once, names say what was applied, settings are written."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from yolo_prune.cli import build_parser
from yolo_prune.cli.common import settings_from_args
from yolo_prune.evaluation.settings import EvalSettings
from yolo_prune.jobs.prune import prune_kwargs, resolve_out_path
from yolo_prune.pruning.settings import PruneSettings, SensitivitySettings
from yolo_prune.settings import IMG_SIZE, JobSettings


@pytest.mark.parametrize("settings, name", [
    (PruneSettings(weights=Path("m.pt")), "m-pruned50.pt"),
    (PruneSettings(weights=Path("m.pt"), pruning_ratio=0.3), "m-pruned30.pt"),
    (PruneSettings(weights=Path("m.pt"), recipe="uniform-30"), "m-pruned30.pt"),  # the recipe's ratio, not --ratio
    (PruneSettings(weights=Path("m.pt"), layer_ratios={"model.2.conv": 0.5}), "m-pruned-layers.pt"),
    (PruneSettings(weights=Path("m.pt"), mode="unstructured", sparsity=0.7), "m-sparse70.pt"),
    (PruneSettings(cfg="yolov7-tiny", pruning_ratio=0.25), "yolov7-tiny-pruned25.pt"),
])
def test_default_output_name_says_what_was_applied(tmp_path, monkeypatch, settings, name):
    monkeypatch.chdir(tmp_path)
    assert resolve_out_path(settings, prune_kwargs(settings)).name == name


def test_an_allocated_recipe_is_named_after_the_recipe(tmp_path):
    recipe = tmp_path / "tiny-3x.yaml"
    recipe.write_text("pruning_ratio: 0.0\nlayer_ratios:\n  'model.2.conv': 0.5\n")
    settings = PruneSettings(weights=tmp_path / "m.pt", recipe=str(recipe))
    assert resolve_out_path(settings, prune_kwargs(settings)).name == "m-pruned-tiny-3x.pt"


def test_flags_left_out_mean_the_dataclass_defaults():
    args = build_parser(["prune", "eval", "sensitivity"]).parse_args(["prune", "--weights", "m.pt", "--ratio", "0.3"])
    settings = settings_from_args(PruneSettings, args)
    assert settings.pruning_ratio == 0.3 and settings.importance == PruneSettings.importance
    assert settings.img_size == IMG_SIZE and settings.latency is True
    eval_args = build_parser(["eval"]).parse_args(["eval", "--weights", "m.pt"])
    assert settings_from_args(EvalSettings, eval_args) == EvalSettings(weights=Path("m.pt"))


def test_help_texts_show_the_dataclass_defaults():
    sub = next(a for a in build_parser(["sensitivity"])._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help for a in sub.choices["sensitivity"]._actions}
    assert f"(default: {SensitivitySettings.max_images})" in helps["max_images"]
    assert "(default: 0.2 0.4 0.6)" in helps["ratios"]
    assert all(a.default is None for a in sub.choices["sensitivity"]._actions if a.dest not in ("help", "quiet", "debug"))


def test_settings_refuse_unknown_keys_and_round_trip_through_yaml(tmp_path):
    with pytest.raises(TypeError, match="Did you mean 'pruning_ratio'"):
        PruneSettings.from_dict({"pruning_ratoi": 0.5})
    settings = PruneSettings(weights=Path("m.pt"), layer_ratios={"a*": 0.2}, round_to=8)
    path = settings.save(tmp_path / "args.yaml")
    assert PruneSettings.from_dict(yaml.safe_load(path.read_text())) == PruneSettings(
        weights="m.pt", layer_ratios={"a*": 0.2}, round_to=8)
    assert issubclass(PruneSettings, JobSettings) and PruneSettings.default("layer_ratios") == {}
