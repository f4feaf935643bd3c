"""Iterative pruning (prune / fine-tune rounds) and sparse-training regularisers on a toy detector."""
from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from _toy import ToyAdapter
from torch import nn

from yolo_prune.pruning import conv_out_channels, prune_model
from yolo_prune.pruning.iterative import final_widths, iterative_prune
from yolo_prune.pruning.sparse import SPARSE_METHODS, SparseTrainingCallback, bn_gamma_summary, build_sparse_regularizer

IMG = 64


def cbs(c1: int, c2: int, s: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c1, c2, 3, s, 1, bias=False), nn.BatchNorm2d(c2), nn.SiLU())


class ToyDetector(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.down, self.block = cbs(3, 32, 2), cbs(32, 64, 2), cbs(64, 64)
        self.head = nn.Conv2d(64, 7, 1)

    def forward(self, x):
        x = self.down(self.stem(x))
        return self.head(x + self.block(x))




@pytest.fixture()
def toy() -> ToyDetector:
    torch.manual_seed(0)
    return ToyDetector().eval()


def _fit(model: nn.Module, target: nn.Module, steps: int = 2) -> nn.Module:
    """A tiny 'fine-tune': match the unpruned model's outputs on random images."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(steps):
        x = torch.rand(2, 3, IMG, IMG)
        with torch.no_grad():
            ref = target.eval()(x)
        loss = (model(x) - ref).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_iterative_prune_records_each_step_and_reaches_the_one_shot_size(toy, tmp_path):
    reference = copy.deepcopy(toy)
    one_shot = prune_model(copy.deepcopy(toy), ToyAdapter(), img_size=IMG, pruning_ratio=0.5).model
    calls = []

    def finetune(model, step):
        calls.append((step, conv_out_channels(model)["down.0"]))
        return _fit(copy.deepcopy(model), reference)  # a new object, as a run loading best.pt returns

    def score(model):
        with torch.no_grad():
            x = torch.ones(1, 3, IMG, IMG)
            return float(-(model.eval()(x) - reference.eval()(x)).abs().mean())

    result = iterative_prune(toy, ToyAdapter(), steps=3, finetune_fn=finetune, score_fn=score, img_size=IMG,
                             pruning_ratio=0.5, progress=None)
    assert [s.step for s in result.steps] == [0, 1, 2, 3]
    assert [c[0] for c in calls] == [1, 2, 3]
    assert [c[1] for c in calls] == [53, 43, 32]  # 64 - 32 k / 3, rounded
    gmacs = [s.gmacs for s in result.steps]
    assert all(a > b for a, b in zip(gmacs, gmacs[1:], strict=False))
    assert result.steps[0].score == pytest.approx(0.0) and all(s.score is not None for s in result.steps)
    assert all(s.score_pruned is not None for s in result.steps[1:])
    assert conv_out_channels(result.model) == conv_out_channels(one_shot)
    assert result.steps[-1].pruning_ratio == pytest.approx(0.5)
    paths = result.save(tmp_path)
    assert paths["png"].stat().st_size > 1000 and '"steps"' in paths["json"].read_text()


@pytest.mark.parametrize("settings", [dict(pruning_ratio=0.4, global_pruning=True),
                                      dict(pruning_ratio=0.3, round_to=8),
                                      dict(pruning_ratio=0.0, layer_ratios={"down.*": 0.6, "stem.*": 0.25})])
def test_steps_land_on_the_one_shot_widths(toy, settings):
    one_shot = prune_model(copy.deepcopy(toy), ToyAdapter(), img_size=IMG, **settings).model
    plan = final_widths(toy, ToyAdapter(), img_size=IMG, **settings)
    assert plan and all(final < start for start, final in plan.values())
    result = iterative_prune(toy, ToyAdapter(), steps=3, finetune_fn=None, img_size=IMG, progress=None, **settings)
    assert conv_out_channels(result.model) == conv_out_channels(one_shot)


def test_iterative_layer_ratios_only_touch_their_layers(toy):
    result = iterative_prune(toy, ToyAdapter(), steps=2, finetune_fn=None, img_size=IMG, pruning_ratio=0.0,
                             layer_ratios={"stem.*": 0.5}, progress=None)
    channels = conv_out_channels(result.model)
    assert channels["stem.0"] == 16 and channels["down.0"] == 64
    assert result.steps[-1].score is None  # no score_fn: nothing scored


def test_iterative_refuses_its_own_settings(toy):
    with pytest.raises(ValueError, match="schedules the steps itself"):
        iterative_prune(toy, ToyAdapter(), steps=2, finetune_fn=None, img_size=IMG, iterative_steps=2)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        iterative_prune(toy, ToyAdapter(), steps=0, finetune_fn=None, img_size=IMG)


# -- sparse training ----------------------------------------------------------------------------
def _backward(model: nn.Module) -> None:
    model.train()
    model.zero_grad()
    model(torch.rand(2, 3, IMG, IMG)).pow(2).mean().backward()


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def test_bn_l1_adds_reg_times_sign_of_gamma(toy):
    reg = build_sparse_regularizer("bn_l1", toy, ToyAdapter(), reg=1e-2, img_size=IMG)
    with torch.no_grad():
        toy.block[1].weight[:8] *= -1  # negative scales must be pushed up, not down
    _backward(toy)
    before = _grads(toy)
    reg.regularize(toy, grad_scale=2.0)
    after = _grads(toy)
    for name, m in toy.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            expected = before[f"{name}.weight"] + 2.0 * 1e-2 * torch.sign(m.weight.detach())
            assert torch.allclose(after[f"{name}.weight"], expected)
    assert torch.equal(after["stem.0.weight"], before["stem.0.weight"])  # convs untouched by network slimming


def test_group_norm_regularises_coupled_convs_but_not_the_head(toy):
    reg = build_sparse_regularizer("group_norm", toy, ToyAdapter(), reg=1e-2, img_size=IMG)
    _backward(toy)
    before = _grads(toy)
    reg.regularize(toy)
    after = _grads(toy)
    assert not torch.equal(after["stem.0.weight"], before["stem.0.weight"])
    assert not torch.equal(after["block.1.weight"], before["block.1.weight"])
    assert torch.equal(after["head.bias"], before["head.bias"])


def test_sparse_training_shrinks_bn_scales(toy):
    def train(model, callback):
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        trainer = SimpleNamespace(model=model, adapter=ToyAdapter(), settings=SimpleNamespace(img_size=IMG))
        if callback is not None:
            callback.on_train_start(trainer)
        for _ in range(15):
            _backward(model)
            if callback is not None:
                callback.on_before_optimizer_step(trainer)
            opt.step()
        if callback is not None:
            callback.on_epoch_end(trainer, 0, {})
        return bn_gamma_summary(model)["bn_gamma_abs_mean"]

    plain = train(copy.deepcopy(toy), None)
    callback = SparseTrainingCallback("bn_l1", reg=0.5)
    slimmed_model = copy.deepcopy(toy)
    slimmed = train(slimmed_model, callback)
    assert slimmed < plain - 0.1
    assert callback.history == [{"epoch": 0, **bn_gamma_summary(slimmed_model)}]
    with pytest.raises(RuntimeError, match="on_train_start was not called"):
        SparseTrainingCallback("bn_l1").on_before_optimizer_step(SimpleNamespace(model=toy))


def test_sparse_methods_are_a_registry(toy):
    assert {"bn_l1", "bn_group_lasso", "group_norm"} <= set(SPARSE_METHODS.names())
    with pytest.raises(KeyError, match="Did you mean 'bn_l1'"):
        build_sparse_regularizer("bn_l2", toy, ToyAdapter(), img_size=IMG)
    with pytest.raises(KeyError, match="Did you mean 'group_norm'"):
        SparseTrainingCallback("group_nrm")
    with pytest.raises(ValueError, match="reg must be > 0"):
        build_sparse_regularizer("bn_l1", toy, ToyAdapter(), reg=0.0, img_size=IMG)


@pytest.mark.slow
def test_run_iterative_with_the_real_engine(tmp_path):
    """Two prune / fine-tune rounds of a narrow yolov7-tiny on the synthetic set, scored by COCO mAP."""
    import yaml

    from yolo_prune import api
    from yolo_prune.data.synthetic import make_synthetic_dataset
    from yolo_prune.jobs.iterative import run_iterative
    from yolo_prune.paths import MODEL_CFGS_DIR

    cfg = yaml.safe_load((MODEL_CFGS_DIR / "training" / "yolov7-tiny.yaml").read_text())
    cfg["width_multiple"] = 0.25
    cfg_path = tmp_path / "yolov7-tiny-w025.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    data = make_synthetic_dataset(tmp_path / "data", n_train=4, n_val=2, img_size=64, seed=0, profile="hard")
    loaded = api.load(cfg=cfg_path, nc=len(yaml.safe_load(data.read_text())["names"]))
    result = run_iterative(loaded, data=data, steps=2, epochs_per_step=1, out_dir=tmp_path / "run", img_size=64,
                           batch_size=4, device="cpu", workers=0, prune_kwargs={"pruning_ratio": 0.5})
    assert [s.step for s in result.steps] == [0, 1, 2]
    assert result.steps[0].gmacs > result.steps[1].gmacs > result.steps[2].gmacs
    assert all(isinstance(s.score, float) for s in result.steps)
    assert (tmp_path / "run" / "step2" / "weights" / "last.pt").exists()
    reloaded = api.load(tmp_path / "run" / "final.pt")
    assert conv_out_channels(reloaded.model) == conv_out_channels(result.model)
