"""Least-squares compensation of pruned consumers (``yolo_prune.pruning.compensation``)."""
from __future__ import annotations

import copy
import json

import pytest
import torch
import torch_pruning as tp
import yaml
from conftest import build_yolov7, randomise_bn
from torch import nn

from yolo_prune.adapters import get_adapter
from yolo_prune.pruning import prune_model
from yolo_prune.pruning.compensation import Compensator


class Redundant(nn.Module):
    """Two producers whose last / first channel is an affine function of their others, then a consumer.

    ``a``'s channel 3 is ``2 * a0 - a1 + 0.5`` and ``b``'s channel 0 is ``b1 + b2 - 0.25`` (no activation
    between), so removing them loses nothing that the kept channels cannot rebuild, exactly.
    The consumer reads the concatenation, as an ELAN block's 1x1 conv does.
    """

    def __init__(self, *, consumer_bias: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.a.weight[3] = 2 * self.a.weight[0] - self.a.weight[1]
            self.a.bias[3] = 2 * self.a.bias[0] - self.a.bias[1] + 0.5
            self.b.weight[0] = self.b.weight[1] + self.b.weight[2]
            self.b.bias[0] = self.b.bias[1] + self.b.bias[2] - 0.25
        self.c = nn.Conv2d(7, 5, 3, padding=0, bias=consumer_bias)  # no padding: the offset holds everywhere
        self.bn = nn.Identity() if consumer_bias else randomise_bn(nn.BatchNorm2d(5)).eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.c(torch.cat([self.a(x), self.b(x)], 1)))


def _prune_redundant(model: Redundant, compensate: Compensator | None) -> None:
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.zeros(1, 3, 8, 8))
    for producer, idxs in ((model.a, [3]), (model.b, [0])):  # the second group meets shifted consumer rows
        group = graph.get_pruning_group(producer, tp.prune_conv_out_channels, idxs=idxs)
        if compensate is not None:
            compensate(group, graph)
        group.prune()


@pytest.mark.parametrize("consumer_bias", [True, False], ids=["offset-to-bias", "offset-to-bn-mean"])
def test_a_removed_channel_that_the_kept_ones_rebuild_costs_nothing(consumer_bias):
    model = Redundant(consumer_bias=consumer_bias)
    images = [torch.rand(4, 3, 12, 12) for _ in range(3)]
    x = torch.rand(2, 3, 12, 12)
    with torch.no_grad():
        before = model(x)
    compensate = Compensator(model, images, ridge=1e-9)
    _prune_redundant(model, compensate)
    assert model.c.in_channels == 5 and compensate.refitted == 2
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, atol=1e-4, rtol=1e-4)

    plain = Redundant(consumer_bias=consumer_bias)
    _prune_redundant(plain, None)
    with torch.no_grad():
        assert (plain(x) - before).abs().max() > 0.05  # what the compensation saved


def test_compensation_refuses_a_bad_ridge_and_no_images():
    with pytest.raises(ValueError, match="ridge must be > 0"):
        Compensator(Redundant(consumer_bias=True), [torch.rand(1, 3, 8, 8)], ridge=0.0)
    with pytest.raises(ValueError, match="at least one calibration image"):
        Compensator(Redundant(consumer_bias=True), [])


def _first_tensor(outputs) -> torch.Tensor:
    """The decoded predictions of any family's eval output (YOLOv7 ``(pred, maps)``, Ultralytics tuples / dicts)."""
    while isinstance(outputs, (tuple, list)):
        outputs = outputs[0]
    return next(iter(outputs.values())) if isinstance(outputs, dict) else outputs


def _output_error(model: nn.Module, reference: torch.Tensor, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((_first_tensor(model(x)) - reference).abs().mean())


def test_compensated_yolov7_stays_closer_to_the_unpruned_outputs():
    """yolov7-tiny (IDetect, ImplicitA / M) at 0.5: the compensated model's outputs move less."""
    original = randomise_bn(build_yolov7("yolov7-tiny", width=0.25, nc=3))
    torch.manual_seed(1)
    batches = [(torch.rand(4, 3, 64, 64), torch.zeros(0, 6)) for _ in range(4)]
    x = torch.cat([b[0] for b in batches[:2]])
    with torch.no_grad():
        reference = original(x)[0]
    errors, results = {}, {}
    for name, calibration in (("plain", None), ("compensated", batches)):
        model = randomise_bn(build_yolov7("yolov7-tiny", width=0.25, nc=3))
        results[name] = prune_model(model, get_adapter("yolov7"), img_size=64, pruning_ratio=0.5, round_to=8,
                                    calibration_batches=calibration)
        errors[name] = _output_error(results[name].model.eval(), reference, x)
    assert results["compensated"].settings["compensate"] and not results["plain"].settings["compensate"]
    assert results["compensated"].channels_after == results["plain"].channels_after  # the same channels go
    assert errors["compensated"] < 0.7 * errors["plain"], errors


def test_prune_command_compensates_from_the_train_images_of_a_data_yaml(tmp_path, capsys):
    """``yolo-prune prune --compensate DATA``: the same channels go, the outputs stay closer, it is recorded."""
    from yolo_prune import api
    from yolo_prune.adapters import LoadedModel
    from yolo_prune.cli import main as cli_main
    from yolo_prune.data.batches import calibration_batches
    from yolo_prune.data.synthetic import make_synthetic_dataset

    data = make_synthetic_dataset(tmp_path / "data", n_train=8, n_val=2, img_size=64, seed=0, profile="demo")
    model = randomise_bn(build_yolov7("yolov7-tiny", width=0.25, nc=3))
    weights = api.save(LoadedModel(model, "yolov7", ["a", "b", "c"], [8, 16, 32]), tmp_path / "m.pt")
    base = ["prune", "--weights", str(weights), "--img", "64", "--ratio", "0.5", "--round-to", "8", "--no-latency"]
    assert cli_main([*base, "--out", str(tmp_path / "plain.pt")]) == 0
    assert cli_main([*base, "--compensate", str(data), "--calibration-images", "6",
                     "--out", str(tmp_path / "comp.pt")]) == 0
    report = json.loads((tmp_path / "comp.json").read_text())
    assert report["settings"]["compensate"] is True
    assert yaml.safe_load((tmp_path / "comp.args.yaml").read_text())["compensate"] == str(data)

    x = torch.cat([imgs for imgs, _ in calibration_batches(data, img_size=64, n_images=4, batch_size=4)])
    assert x.shape[0] == 4
    with torch.no_grad():
        reference = api.load(weights).model.eval()(x)[0]
    plain, comp = (api.load(tmp_path / f"{n}.pt").model.eval() for n in ("plain", "comp"))
    assert [m.weight.shape for m in plain.modules() if isinstance(m, nn.Conv2d)] == \
        [m.weight.shape for m in comp.modules() if isinstance(m, nn.Conv2d)]
    assert _output_error(comp, reference, x) < 0.7 * _output_error(plain, reference, x)

    capsys.readouterr()
    assert cli_main([*base, "--compensate", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err
    assert cli_main([*base, "--mode", "unstructured", "--compensate", str(data)]) == 2
    assert "--compensate" in capsys.readouterr().err


@pytest.mark.parametrize("cfg", ["yolov8n.yaml", "yolo11n.yaml", "yolov5nu.yaml", "yolo26n.yaml"])
def test_compensated_ultralytics_models_stay_closer_to_the_unpruned_outputs(cfg):
    """C2f / C3k2 splits, C2PSA attention and YOLO11's depthwise convs (left as they are) all refit."""
    adapter = get_adapter("ultralytics")
    original = randomise_bn(adapter.build(cfg).model).eval()
    torch.manual_seed(1)
    batches = [(torch.rand(4, 3, 64, 64), torch.zeros(0, 6)) for _ in range(4)]
    x = torch.cat([b[0] for b in batches[:2]])
    with torch.no_grad():
        reference = _first_tensor(original(x))
    errors = {}
    for name, calibration in (("plain", None), ("compensated", batches)):
        pruned = prune_model(copy.deepcopy(original), adapter, img_size=64, pruning_ratio=0.5,
                             calibration_batches=calibration).model.eval()
        errors[name] = _output_error(pruned, reference, x)
    assert errors["compensated"] < 0.3 * errors["plain"], errors


def test_iterative_pruning_refits_at_every_step_even_from_a_generator():
    """Each step re-collects the statistics of the model as it is then; a generator must not run dry."""
    from yolo_prune.pruning.iterative import iterative_prune

    model = randomise_bn(build_yolov7("yolov7-tiny", width=0.25, nc=3))
    batches = ((torch.rand(2, 3, 64, 64), torch.zeros(0, 6)) for _ in range(2))
    result = iterative_prune(model, get_adapter("yolov7"), steps=2, finetune_fn=None, img_size=64, pruning_ratio=0.5,
                             round_to=8, calibration_batches=batches)
    assert result.settings["compensate"] is True and "calibration_batches" not in result.settings
    assert [s.gmacs for s in result.steps] == sorted((s.gmacs for s in result.steps), reverse=True)
    assert result.steps[2].gmacs < result.steps[1].gmacs  # the second step pruned (and refitted) too


def test_calibration_takes_exactly_the_images_asked_for(tmp_path):
    from yolo_prune.data.batches import calibration_batches
    from yolo_prune.data.synthetic import make_synthetic_dataset

    data = make_synthetic_dataset(tmp_path / "data", n_train=5, n_val=1, img_size=64, seed=0, profile="demo")
    assert [len(b[0]) for b in calibration_batches(data, img_size=64, n_images=3, batch_size=2)] == [2, 1]
    assert sum(len(b[0]) for b in calibration_batches(data, img_size=64, n_images=50, batch_size=2)) == 5  # all 5
    with pytest.raises(ValueError, match="at least one image"):
        calibration_batches(data, img_size=64, n_images=0)
