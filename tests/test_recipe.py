"""Prune recipes: round trip, validation with helpful errors, shipped examples apply."""
from __future__ import annotations

import copy

import pytest
import torch
from _toy import ToyAdapter
from torch import nn

from yolo_prune.paths import PRUNE_RECIPES_DIR
from yolo_prune.pruning import prune_model
from yolo_prune.pruning.recipe import (
    Recipe,
    RecipeError,
    load_recipe,
    read_recipe,
    recipe_from_dict,
    resolve_recipe_path,
    save_recipe,
)

IMG = 64
SHIPPED = sorted(PRUNE_RECIPES_DIR.glob("*.yaml"))


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.SiLU())
        self.body = nn.Sequential(nn.Conv2d(32, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.SiLU())
        self.head = nn.Conv2d(32, 6, 1)

    def forward(self, x):
        return self.head(self.body(self.stem(x)))




def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_recipe_round_trips(tmp_path):
    recipe = Recipe(pruning_ratio=0.0, importance="l1", layer_ratios={"stem.0": 0.25, "body.*": 0.5},
                    global_pruning=False, round_to=4, name="mine", description="two layers",
                    target={"metric": "gmacs", "value": 0.01}, provenance={"created_by": "test"})
    path = save_recipe(recipe, tmp_path / "mine.yaml", header="a comment line")
    assert path.read_text().startswith("# a comment line\n")
    assert read_recipe(path) == recipe
    assert load_recipe(path) == {"importance": "l1", "pruning_ratio": 0.0, "global_pruning": False, "round_to": 4,
                                 "layer_ratios": {"stem.0": 0.25, "body.*": 0.5}}


def test_loaded_recipe_prunes_like_the_same_arguments(tmp_path):
    kwargs = dict(pruning_ratio=0.0, importance="l2", layer_ratios={"body.*": 0.5})
    path = save_recipe(Recipe(**kwargs), tmp_path / "r.yaml")
    torch.manual_seed(0)
    model = TinyNet().eval()
    direct = prune_model(copy.deepcopy(model), ToyAdapter(), img_size=IMG, **kwargs).model
    from_file = prune_model(copy.deepcopy(model), ToyAdapter(), img_size=IMG, **load_recipe(path)).model
    assert _shapes(direct) == _shapes(from_file)
    assert from_file.body[0].out_channels == 16 and from_file.stem[0].out_channels == 32


@pytest.mark.parametrize("values, message", [
    ({"pruning_ratio": 0.3, "layer_ratio": {}}, "Did you mean 'layer_ratios'"),
    ({"pruning_ratio": 0.3, "importanse": "l2"}, "Did you mean 'importance'"),
    ({"layer_ratios": {"a*": 0.2}}, "no 'pruning_ratio'"),
    ({"pruning_ratio": 1.0}, "must be in \\[0, 1\\)"),
    ({"pruning_ratio": "half"}, "must be a number"),
    ({"pruning_ratio": 0.2, "layer_ratios": {"a*": 1.5}}, "layer_ratios\\['a\\*'\\] must be in"),
    ({"pruning_ratio": 0.2, "layer_ratios": ["a*"]}, "must map module-name globs"),
    ({"pruning_ratio": 0.2, "importance": "l3"}, "Did you mean"),
    ({"pruning_ratio": 0.2, "round_to": 0}, "round_to must be a positive integer"),
    ({"pruning_ratio": 0.2, "global_pruning": "yes"}, "global_pruning must be true or false"),
    ([0.5], "must be a YAML mapping"),
])
def test_bad_recipes_are_named(values, message):
    with pytest.raises(RecipeError, match=message):
        recipe_from_dict(values)


def test_bad_yaml_and_missing_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("pruning_ratio: [0.3\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        read_recipe(bad)
    with pytest.raises(RecipeError, match="Did you mean 'uniform-50'"):
        resolve_recipe_path("uniform-5")


def test_recipes_resolve_by_name():
    assert resolve_recipe_path("uniform-50") == PRUNE_RECIPES_DIR / "uniform-50.yaml"
    assert resolve_recipe_path("uniform-50.yaml") == PRUNE_RECIPES_DIR / "uniform-50.yaml"


def test_a_uniform_example_is_shipped():
    assert any(load_recipe(p)["pruning_ratio"] > 0 and not load_recipe(p)["layer_ratios"] for p in SHIPPED)


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_recipes_load_and_apply(path):
    recipe = read_recipe(path)
    assert recipe.name == path.stem
    torch.manual_seed(0)
    model = TinyNet().eval()
    result = prune_model(model, ToyAdapter(), img_size=IMG, **recipe.prune_kwargs())
    assert result.params_after < result.params_before
    assert result.model(torch.rand(1, 3, IMG, IMG)).shape == (1, 6, IMG // 4, IMG // 4)
