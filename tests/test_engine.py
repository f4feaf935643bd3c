"""Fine-tuning engine: EMA, optimizer groups, schedules, settings, results log, and the loop."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from yolo_prune.engine.ema import ModelEMA
from yolo_prune.engine.optim import (
    BIAS,
    DECAY,
    NO_DECAY,
    accumulate_steps,
    apply_warmup,
    build_optimizer,
    lr_factor,
    split_param_groups,
    warmup_iterations,
)
from yolo_prune.engine.plots import ResultsLog, plot_results
from yolo_prune.engine.settings import TrainSettings

HYP = {"lr0": 0.01, "lrf": 0.1, "momentum": 0.937, "weight_decay": 0.0005, "warmup_epochs": 3.0,
       "warmup_momentum": 0.8, "warmup_bias_lr": 0.1}


class Implicit(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.implicit = nn.Parameter(torch.zeros(1, c, 1, 1))


class SmallNet(nn.Module):
    """conv(bias=False)+BN, a conv with bias, an implicit bare parameter, a frozen layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Conv2d(4, 2, 1)
        self.ia = Implicit(4)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)

    def forward(self, x):
        return self.head(self.bn(self.conv(x)) + self.ia.implicit)


# -- EMA -----------------------------------------------------------------------------------
def test_ema_follows_official_decay_and_counts_updates():
    model = SmallNet()
    ema = ModelEMA(model, decay=0.9999, tau=2000)
    before = ema.ema.head.weight.clone()
    with torch.no_grad():
        model.head.weight.add_(1.0)
    ema.update(model)
    d = 0.9999 * (1 - math.exp(-1 / 2000))
    assert ema.updates == 1
    torch.testing.assert_close(ema.ema.head.weight, d * before + (1 - d) * model.head.weight)
    assert not any(p.requires_grad for p in ema.ema.parameters())
    assert ema.ema.bn.num_batches_tracked.dtype == torch.long  # integer buffers are not averaged


def test_ema_from_state_keeps_weights_and_updates():
    model = SmallNet()
    ema = ModelEMA(model)
    for _ in range(3):
        ema.update(model)
    restored = ModelEMA.from_state(ema.ema, ema.updates)
    assert restored.updates == 3 and restored.current_decay() == ema.current_decay()


# -- optimizer / schedule --------------------------------------------------------------------
def test_param_groups_exempt_bn_implicit_and_bias_from_decay():
    model = SmallNet()
    no_decay, decay, bias = split_param_groups(model)
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(decay) == {id(model.conv.weight), id(model.head.weight)}
    assert ids(no_decay) == {id(model.bn.weight), id(model.ia.implicit)}
    assert ids(bias) == {id(model.bn.bias), id(model.head.bias)}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert ids(no_decay) | ids(decay) | ids(bias) == trainable  # every trainable one, exactly once
    assert len(no_decay) + len(decay) + len(bias) == len(trainable)
    opt = build_optimizer(model, lr0=0.01, momentum=0.937, weight_decay=5e-4)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 5e-4, 0.0]
    assert all(g["nesterov"] for g in opt.param_groups)


def test_adamw_keeps_the_three_groups_and_takes_momentum_as_beta1():
    model = SmallNet()
    opt = build_optimizer(model, lr0=0.001, momentum=0.9, weight_decay=5e-4, optimizer="AdamW")
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 5e-4, 0.0]
    assert all(g["betas"] == (0.9, 0.999) and g["initial_lr"] == 0.001 for g in opt.param_groups)
    with pytest.raises(ValueError, match="SGD, AdamW"):
        build_optimizer(model, lr0=0.001, momentum=0.9, weight_decay=0.0, optimizer="adam")


def test_hyp_names_its_optimizer_and_refuses_unknown_ones():
    from yolo_prune.engine.hyp import HypError, validate_hyp
    from yolo_prune.paths import HYP_DIR

    official = yaml.safe_load((HYP_DIR / "hyp.scratch.tiny.yaml").read_text())
    assert validate_hyp(official)["optimizer"] == "SGD"  # the official files have no such key
    assert validate_hyp({**official, "optimizer": "AdamW"})["optimizer"] == "AdamW"
    with pytest.raises(HypError, match="optimizer must be one of SGD, AdamW, got 'Adam'"):
        validate_hyp({**official, "optimizer": "Adam"})


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_lr_factor_runs_from_one_to_lrf(schedule):
    lf = lr_factor(schedule, epochs=10, lrf=0.2)
    values = [lf(e) for e in range(10)]
    assert values[0] == pytest.approx(1.0) and values[-1] == pytest.approx(0.2)
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_lr_factor_unknown_schedule_names_choices():
    with pytest.raises(ValueError, match="cosine, linear"):
        lr_factor("cosin", 10, 0.1)


def test_warmup_ramps_lr_momentum_and_accumulation():
    model = SmallNet()
    opt = build_optimizer(model, lr0=0.01, momentum=0.937, weight_decay=5e-4)
    nw = warmup_iterations(HYP["warmup_epochs"], batches_per_epoch=10, min_iters=100)
    assert nw == 100  # max(3 * 10, 100)
    assert warmup_iterations(0.0, 10, 100) == 0  # a hyp without warm-up gets none
    assert warmup_iterations(1.0, 10, 100, total_iters=60) == 20  # the floor takes at most a third of the run
    assert warmup_iterations(1.0, 10, 100, total_iters=3000) == 100
    acc = apply_warmup(opt, ni=0, warmup_iters=nw, epoch_factor=1.0, hyp=HYP, accumulate=16)
    assert acc == 1
    assert opt.param_groups[BIAS]["lr"] == pytest.approx(0.1)
    assert opt.param_groups[DECAY]["lr"] == 0.0 and opt.param_groups[NO_DECAY]["momentum"] == pytest.approx(0.8)
    acc = apply_warmup(opt, ni=50, warmup_iters=nw, epoch_factor=1.0, hyp=HYP, accumulate=16)
    assert acc == 8  # round(1 + 15 / 2)
    assert opt.param_groups[DECAY]["lr"] == pytest.approx(0.005)
    assert opt.param_groups[BIAS]["lr"] == pytest.approx(0.055)
    assert accumulate_steps(64, 16) == 4 and accumulate_steps(64, 128) == 1


# -- settings ----------------------------------------------------------------------------------
def test_settings_unknown_key_names_close_match_and_none_means_default():
    with pytest.raises(TypeError, match="Did you mean 'epochs'"):
        TrainSettings.from_dict({"epoch": 3})
    assert TrainSettings.from_dict({"epochs": None, "batch_size": 4}).epochs == TrainSettings().epochs
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        TrainSettings(batch_size=0)


# -- results -----------------------------------------------------------------------------------
def test_results_log_round_trips_and_plots(tmp_path):
    log = ResultsLog(tmp_path / "results.csv")
    for epoch in range(3):
        log.append({"epoch": epoch, "train/box": 1.0 / (epoch + 1), "metrics/mAP50": None, "lr/pg0": 0.01})
    text = (tmp_path / "results.csv").read_text()
    assert text.splitlines()[0] == "epoch,train/box,metrics/mAP50,lr/pg0" and len(text.splitlines()) == 4
    restored = ResultsLog.from_text(tmp_path / "r2.csv", log.text(), up_to_epoch=1)
    assert [r["epoch"] for r in restored.rows] == [0, 1]
    assert restored.rows[1]["train/box"] == pytest.approx(0.5)
    png = plot_results(log.rows, tmp_path / "results.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries


# -- the loop on the real (width-reduced) yolov7-tiny and the synthetic shapes set ----------------
import copy  # noqa: E402

import yaml  # noqa: E402

from yolo_prune.adapters import get_adapter  # noqa: E402
from yolo_prune.api import finetune  # noqa: E402
from yolo_prune.engine.hooks import TrainerCallbacks  # noqa: E402
from yolo_prune.engine.trainer import Trainer  # noqa: E402
from yolo_prune.paths import HYP_DIR, MODEL_CFGS_DIR  # noqa: E402

IMG = 64
NAMES = 6  # classes of the synthetic shapes set


@pytest.fixture(scope="module")
def shapes_data(tmp_path_factory):
    """4 train / 2 val synthetic images of 64 px."""
    from yolo_prune.data.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("shapes"), n_train=4, n_val=2, img_size=IMG, seed=0,
                                  profile="hard")


@pytest.fixture(scope="module")
def fast_hyp(tmp_path_factory):
    """The fine-tuning hyp with the plain (non-OTA) loss, no warm-up and no mixup: fast, smooth."""
    hyp = yaml.safe_load((HYP_DIR / "hyp.finetune.yaml").read_text())
    hyp.update(loss_ota=0, warmup_epochs=0.0, mixup=0.0, lr0=0.05)
    path = tmp_path_factory.mktemp("hyp") / "hyp.yaml"
    path.write_text(yaml.safe_dump(hyp))
    return path


@pytest.fixture(scope="module")
def tiny_model():
    """yolov7-tiny (IDetect, implicit layers) at width 0.125 for the 6 synthetic classes."""
    torch.manual_seed(0)
    return get_adapter("yolov7").build("yolov7-tiny", nc=NAMES, width_multiple=0.125)


def _fixed_batch():
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (2, 3, IMG, IMG), dtype=torch.uint8, generator=g)
    targets = torch.tensor([[0, 0, 0.5, 0.5, 0.3, 0.3], [1, 3, 0.3, 0.4, 0.2, 0.4]])
    return imgs, targets


def _trainer(loaded, hyp_path, tmp_path, amp=True, **kwargs):
    from yolo_prune.engine.hyp import load_hyp

    settings = TrainSettings(epochs=1, img_size=IMG, batch_size=2, nominal_batch=2, device="cpu", workers=0, amp=amp)
    return Trainer(copy.deepcopy(loaded.model), get_adapter("yolov7"), None, None, hyp=load_hyp(hyp_path),
                   settings=settings, out_dir=tmp_path, names=loaded.names, device=torch.device("cpu"), **kwargs)


def test_loss_falls_when_overfitting_two_images(tiny_model, fast_hyp, tmp_path):
    trainer = _trainer(tiny_model, fast_hyp, tmp_path)
    batch = _fixed_batch()
    totals = [float(trainer.run_step(batch, 0, step, 100).sum()) for step in range(20)]
    assert all(math.isfinite(t) for t in totals)
    first, last = sum(totals[:3]) / 3, sum(totals[-3:]) / 3
    assert last < 0.9 * first, totals
    assert trainer.ema.updates == 20  # one optimizer step per batch (nominal batch = batch)


def test_channels_last_training_matches_nchw_and_files_keep_the_standard_layout(tiny_model, fast_hyp, tmp_path):
    from yolo_prune.adapters.yolov7.checkpoint import load_checkpoint
    from yolo_prune.engine import checkpointing

    nhwc = _trainer(tiny_model, fast_hyp, tmp_path / "nhwc", amp=False)  # float32: only the layout differs
    nchw = _trainer(tiny_model, fast_hyp, tmp_path / "nchw", amp=False)
    nchw.settings.channels_last = False
    nchw._build_training_state(copy.deepcopy(tiny_model.model))
    assert nhwc.model.model[0].conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert nchw.model.model[0].conv.weight.is_contiguous()
    # the same loss and gradients (only the rounding of other conv kernels differs); optimizer steps are
    # not compared: on a 2-image batch they amplify rounding chaotically
    items = [t.forward_backward(*t.preprocess(_fixed_batch())) for t in (nhwc, nchw)]
    torch.testing.assert_close(items[0], items[1], rtol=1e-4, atol=1e-7)
    for a, b in zip(nhwc.model.parameters(), nchw.model.parameters(), strict=True):
        assert float((a.grad - b.grad).norm()) <= 1e-3 * float(b.grad.norm()) + 1e-8
    nhwc.optimizer_step()
    path = checkpointing.save_best(tmp_path / "best.pt", adapter=get_adapter("yolov7"), model=nhwc.model,
                                   names=tiny_model.names, epoch=0, best_fitness=0.1, results_text="", ema=nhwc.ema)
    assert all(t.is_contiguous() for t in load_checkpoint(path).model.state_dict().values())
    assert nhwc.ema.ema.model[0].conv.weight.is_contiguous(memory_format=torch.channels_last)  # training goes on


def test_cpu_mixed_precision_is_bf16_only_where_the_cpu_computes_it_natively(monkeypatch):
    from yolo_prune.devices import autocast_dtype

    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False)
    assert autocast_dtype(torch.device("cpu")) is None  # emulated bf16 would be slower than float32
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert autocast_dtype(torch.device("cpu")) is torch.bfloat16
    assert autocast_dtype(torch.device("cuda", 0)) is torch.float16


def test_bf16_training_runs_convolutions_in_bf16_and_the_loss_and_weights_in_float32(tiny_model, fast_hyp, tmp_path,
                                                                                    monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)  # (emulated on other CPUs)
    bf16, fp32 = _trainer(tiny_model, fast_hyp, tmp_path / "bf16"), _trainer(tiny_model, fast_hyp, tmp_path / "fp32",
                                                                             amp=False)
    assert bf16.amp_dtype is torch.bfloat16 and not bf16.scaler.is_enabled() and fp32.amp_dtype is None
    seen = {}
    loss_fn = bf16.loss_fn

    def recording_loss(outputs, targets, imgs):
        seen["outputs"] = {o.dtype for o in outputs}
        loss, items = loss_fn(outputs, targets, imgs)
        seen["loss"] = loss.dtype
        return loss, items

    bf16.loss_fn = recording_loss
    bf16.model.model[0].conv.register_forward_hook(lambda m, i, out: seen.update(conv=out.dtype))
    items = bf16.forward_backward(*bf16.preprocess(_fixed_batch()))
    assert seen == {"conv": torch.bfloat16, "outputs": {torch.float32}, "loss": torch.float32}
    assert all(p.dtype == p.grad.dtype == torch.float32 for p in bf16.model.parameters())
    reference = fp32.forward_backward(*fp32.preprocess(_fixed_batch()))
    torch.testing.assert_close(items, reference, rtol=0.05, atol=1e-4)  # the same loss, to bf16's precision


def test_distillation_term_vanishes_for_an_identical_teacher(tiny_model, fast_hyp, tmp_path):
    from yolo_prune.adapters.yolov7 import build_distill_loss
    from yolo_prune.engine.hyp import load_hyp

    teacher = copy.deepcopy(tiny_model.model).eval()
    trainer = _trainer(tiny_model, fast_hyp, tmp_path, teacher=teacher,
                       distill_fn=build_distill_loss(tiny_model.model, teacher, load_hyp(fast_hyp)))
    trainer.model.eval()  # same BN statistics as the teacher: the student's maps equal the teacher's
    items = trainer.forward_backward(*trainer.preprocess(_fixed_batch()))
    assert trainer.loss_names == ["box", "obj", "cls", "distill"] and items.shape == (4,)
    assert float(items[-1]) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    assert float(trainer.forward_backward(*trainer.preprocess(_fixed_batch()))[-1]) > 1e-4


def _tiny_cfg(tmp_path):
    cfg = yaml.safe_load((MODEL_CFGS_DIR / "training" / "yolov7-tiny.yaml").read_text())
    cfg["width_multiple"] = 0.125
    path = tmp_path / "yolov7-tiny-w0.125.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_cli_one_epoch_writes_checkpoints_results_and_config(shapes_data, fast_hyp, tmp_path, capsys):
    from yolo_prune.adapters.yolov7.checkpoint import load_checkpoint, read_checkpoint
    from yolo_prune.cli import main

    out = tmp_path / "run"
    argv = ["finetune", "--cfg", str(_tiny_cfg(tmp_path)), "--data", str(shapes_data), "--hyp", str(fast_hyp),
            "--epochs", "1", "--img", str(IMG), "--batch", "2", "--nominal-batch", "2", "--workers", "0",
            "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    last, best = read_checkpoint(out / "weights" / "last.pt"), read_checkpoint(out / "weights" / "best.pt")
    assert last["epoch"] == 0 and last["optimizer"] is not None and last["updates"] == 2
    assert next(last["model"].parameters()).dtype == torch.float32  # exact resume needs float32
    assert next(last["ema"].parameters()).dtype == torch.float32
    assert best["optimizer"] is None and next(best["model"].parameters()).dtype == torch.float16
    assert load_checkpoint(out / "weights" / "best.pt").nc == NAMES
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 2 and "metrics/mAP50-95" in rows[0] and "train/box" in rows[0]
    assert rows[1].split(",")[rows[0].split(",").index("metrics/mAP50-95")] != ""  # validated
    assert (out / "results.png").stat().st_size > 0
    assert yaml.safe_load((out / "args.yaml").read_text())["settings"]["epochs"] == 1
    assert main(argv) == 2  # an existing run is not overwritten
    assert "--exist-ok" in capsys.readouterr().err
    quiet = [*argv[:-1], str(tmp_path / "quiet"), "--quiet"]
    assert main(quiet) == 0
    captured = capsys.readouterr()
    assert "epoch 1/1" not in captured.err and captured.out == ""  # --quiet: no bars, no printout


def test_results_png_is_drawn_when_a_metric_lands_and_after_the_last_epoch(tiny_model, shapes_data, fast_hyp,
                                                                             tmp_path):
    class PlotRecorder(TrainerCallbacks):
        def __init__(self):
            self.drawn = []

        def on_epoch_end(self, trainer, epoch, row):
            png = trainer.paths.results_png
            self.drawn.append(png.exists())
            png.unlink(missing_ok=True)

    recorder = PlotRecorder()
    finetune(copy.deepcopy(tiny_model), data=shapes_data, hyp=fast_hyp, out_dir=tmp_path / "run", epochs=3,
             img_size=IMG, batch_size=2, nominal_batch=2, workers=0, device="cpu", val_period=2, callbacks=recorder)
    assert recorder.drawn == [False, True, True]  # epoch 2 validated (period 2), epoch 3 the last
    assert len((tmp_path / "run" / "results.csv").read_text().splitlines()) == 4  # the csv has every epoch


class _Interrupt(TrainerCallbacks):
    def on_epoch_end(self, trainer, epoch, row):
        raise KeyboardInterrupt  # like Ctrl-C after last.pt of epoch 0 is written


def test_resume_after_interruption_matches_uninterrupted_run(tiny_model, shapes_data, fast_hyp, tmp_path):
    from yolo_prune.adapters.yolov7.checkpoint import read_checkpoint

    kwargs = dict(data=shapes_data, hyp=fast_hyp, epochs=2, img_size=IMG, batch_size=2, nominal_batch=2,
                  workers=0, device="cpu", val=False, close_mosaic=1)

    class MosaicRecorder(TrainerCallbacks):
        def __init__(self):
            self.seen = set()

        def on_step_end(self, trainer, epoch, step, loss_items):
            self.seen.add((epoch, trainer.train_set.mosaic))

    recorder = MosaicRecorder()
    finetune(copy.deepcopy(tiny_model), out_dir=tmp_path / "whole", callbacks=recorder, **kwargs)
    assert recorder.seen == {(0, True), (1, False)}  # close_mosaic=1: no mosaic in the last epoch
    with pytest.raises(KeyboardInterrupt):
        finetune(copy.deepcopy(tiny_model), out_dir=tmp_path / "cut", callbacks=_Interrupt(), **kwargs)
    saved = read_checkpoint(tmp_path / "cut" / "weights" / "last.pt")
    assert saved["epoch"] == 0 and saved["updates"] == 2
    with pytest.raises(ValueError, match="epochs=5 cannot change"):
        finetune(resume=tmp_path / "cut", epochs=5)

    class CheckStart(TrainerCallbacks):
        def on_train_start(self, trainer):
            self.start = trainer.start_epoch
            self.optimizer = copy.deepcopy(trainer.optimizer.state_dict())
            self.ema_updates = trainer.ema.updates

    check = CheckStart()
    finetune(resume=tmp_path / "cut", callbacks=check)
    assert check.start == 1 and check.ema_updates == saved["updates"]
    _assert_same_optimizer_state(check.optimizer, saved["optimizer"])
    whole, resumed = (read_checkpoint(tmp_path / run / "weights" / "last.pt") for run in ("whole", "cut"))
    for key in ("model", "ema"):
        for (name, a), b in zip(whole[key].state_dict().items(), resumed[key].state_dict().values(), strict=True):
            assert torch.equal(a, b), f"{key}.{name} differs after resume"
    _assert_same_optimizer_state(whole["optimizer"], resumed["optimizer"])
    assert _losses(whole["training_results"]) == _losses(resumed["training_results"])
    with pytest.raises(ValueError, match="already finished"):
        finetune(resume=tmp_path / "cut")


def _losses(csv_text: str) -> list[list[str]]:
    """The results rows without the wall-clock column."""
    rows = [line.split(",") for line in csv_text.splitlines()]
    keep = [i for i, name in enumerate(rows[0]) if name != "time_s"]
    return [[row[i] for i in keep] for row in rows]


def _assert_same_optimizer_state(a: dict, b: dict) -> None:
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for key in a["state"]:
        torch.testing.assert_close(a["state"][key], b["state"][key], rtol=0, atol=0)


def test_bad_hyp_and_data_files_give_clear_errors(tiny_model, shapes_data, tmp_path):
    from yolo_prune.data import DataError
    from yolo_prune.engine.hyp import HypError

    bad_hyp = tmp_path / "hyp.yaml"
    bad_hyp.write_text((HYP_DIR / "hyp.finetune.yaml").read_text().replace("lr0:", "lr_0:"))
    with pytest.raises(HypError, match="lr0"):
        finetune(tiny_model, data=shapes_data, hyp=bad_hyp, out_dir=tmp_path / "a", epochs=1, device="cpu")
    bad_data = tmp_path / "data.yaml"
    bad_data.write_text(shapes_data.read_text().replace("val_ann:", "val_annotations:"))
    with pytest.raises(DataError, match="val_ann"):
        finetune(tiny_model, data=bad_data, out_dir=tmp_path / "b", epochs=1, device="cpu")
    renamed = get_adapter("yolov7").build("yolov7-tiny", nc=tiny_model.nc, width_multiple=0.125)
    renamed.names = [f"other{i}" for i in range(tiny_model.nc)]  # same count, other classes
    with pytest.raises(ValueError, match="other names .*--rename-classes"):
        finetune(renamed, data=shapes_data, out_dir=tmp_path / "c", epochs=1, device="cpu")
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()  # nothing written on refusal


def test_cli_sparse_training_shrinks_bn_scales(shapes_data, fast_hyp, tmp_path):
    """--sparse bn_l1 (network slimming) pulls BN scales towards zero compared with plain training."""
    from yolo_prune.adapters.yolov7.checkpoint import read_checkpoint
    from yolo_prune.cli import main

    def gamma_l1(run):
        model = read_checkpoint(run / "weights" / "last.pt")["model"]
        return sum(m.weight.abs().sum().item() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))

    base = ["finetune", "--cfg", str(_tiny_cfg(tmp_path)), "--data", str(shapes_data), "--hyp", str(fast_hyp),
            "--epochs", "1", "--img", str(IMG), "--batch", "2", "--nominal-batch", "2", "--workers", "0",
            "--device", "cpu", "--no-val"]
    assert main([*base, "--out", str(tmp_path / "plain")]) == 0
    assert main([*base, "--out", str(tmp_path / "sparse"), "--sparse", "bn_l1", "--sparse-reg", "0.05"]) == 0
    assert gamma_l1(tmp_path / "sparse") < gamma_l1(tmp_path / "plain")
