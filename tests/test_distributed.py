"""DDP: two gloo processes on CPU compute the same update as one process on the joined batch.

Why a toy model without BatchNorm: in train mode BN normalises with the statistics of each
process's own half batch, so per-rank gradients legitimately differ from the joined batch
(SyncBatchNorm would fix that, but it has no CPU kernel). Why a per-image loss: YOLOv7's loss
is a mean over the matched anchors of the whole batch, which does not split into per-half
means; the trainer's contract (``loss * batch_size``, and ``* world_size`` under DDP because
DDP averages gradients) is what must hold, and a per-image loss makes it checkable exactly.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from yolo_prune.adapters.base import DetectorAdapter, LoadedModel
from yolo_prune.engine.distributed import DistInfo, cleanup_distributed, init_distributed, unwrap_model
from yolo_prune.engine.settings import TrainSettings
from yolo_prune.engine.trainer import Trainer

HYP = {"lr0": 0.1, "lrf": 0.1, "momentum": 0.9, "weight_decay": 0.0005, "warmup_epochs": 0,
       "warmup_momentum": 0.8, "warmup_bias_lr": 0.1}
WORLD = 2
BATCH = 4  # joined batch; each rank gets 2 images


class TinyNoBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, 2, 1)
        self.implicit = nn.Parameter(torch.full((1, 8, 1, 1), 0.1))
        self.head = nn.Conv2d(8, 6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.nn.functional.silu(self.conv(x)) + self.implicit)


class PerImageAdapter(DetectorAdapter):
    """Loss = sum over images of a per-image mean squared error (``mean * batch_size``)."""

    name = "per-image-toy"

    def matches(self, model):
        return isinstance(model, TinyNoBN)

    def load(self, path, *, trust=False, cfg=None):
        raise NotImplementedError

    def build(self, cfg, nc=None):
        return LoadedModel(TinyNoBN(), self.name, ["a"], [2])

    def ignored_layers(self, model):
        return [model.head]

    def decode(self, output):
        raise NotImplementedError

    def save(self, loaded, path, *, extra=None):
        raise NotImplementedError

    def loss(self, model, hyp):
        def loss_fn(outputs, targets, imgs):
            per_image = ((outputs - 0.5) ** 2).mean(dim=(1, 2, 3))
            items = torch.stack([per_image.mean(), per_image.max(), per_image.min()])
            return per_image.mean() * imgs.shape[0], items.detach()

        return loss_fn


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    imgs = torch.randint(0, 256, (BATCH, 3, 16, 16), generator=g, dtype=torch.uint8)
    return imgs, torch.zeros(0, 6)


def _trainer(info: DistInfo) -> Trainer:
    settings = TrainSettings(epochs=1, batch_size=BATCH, img_size=16, nominal_batch=BATCH, ema=False,
                             amp=False)  # float32: the comparison is exact to 1e-5
    return Trainer(TinyNoBN(), PerImageAdapter(), None, None, hyp=HYP, settings=settings, out_dir="unused",
                   names=["a"], device=torch.device("cpu"), dist_info=info)


def _one_update(trainer: Trainer, imgs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.forward_backward(*trainer.preprocess((imgs, targets)))
    grads = {n: p.grad.clone() for n, p in unwrap_model(trainer.model).named_parameters()}
    trainer.optimizer_step()
    weights = {n: p.detach().clone() for n, p in unwrap_model(trainer.model).named_parameters()}
    return {"grads": grads, "weights": weights}


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    info = init_distributed(torch.device("cpu"))
    try:
        imgs, targets = _batch()
        share = BATCH // WORLD
        result = _one_update(_trainer(info), imgs[rank * share:(rank + 1) * share], targets)
        torch.save(result, Path(out) / f"rank{rank}.pt")
    finally:
        cleanup_distributed()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")
def test_two_process_gloo_step_matches_one_process_on_joined_batch(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    reference = _one_update(_trainer(DistInfo()), *_batch())
    for rank in range(WORLD):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        for kind in ("grads", "weights"):
            for name, expected in reference[kind].items():
                where = f"rank {rank} {kind} {name}"
                torch.testing.assert_close(result[kind][name], expected, rtol=1e-5, atol=1e-6,
                                           msg=lambda m, where=where: f"{where}: {m}")


def test_single_process_info_is_not_distributed(monkeypatch):
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    info = init_distributed(torch.device("cpu"))
    assert (info.rank, info.world_size, info.enabled, info.is_main) == (0, 1, False, True)


def test_batch_must_split_evenly_over_ranks():
    settings = TrainSettings(epochs=1, batch_size=3, img_size=16, ema=False)
    with pytest.raises(ValueError, match="multiple of the 2 processes"):
        Trainer(TinyNoBN(), PerImageAdapter(), None, None, hyp=HYP, settings=settings, out_dir="unused",
                names=["a"], device=torch.device("cpu"), dist_info=DistInfo(rank=0, world_size=2))


def test_sync_bn_refused_on_cpu():
    from yolo_prune.engine.distributed import wrap_model

    with pytest.raises(ValueError, match="needs CUDA"):
        wrap_model(nn.BatchNorm2d(3), torch.device("cpu"), DistInfo(rank=0, world_size=2), sync_bn=True)


@pytest.mark.slow
def test_torchrun_two_processes_fine_tune_and_only_rank0_writes(tmp_path):
    """The real script under ``torchrun --nproc_per_node 2`` (gloo on CPU): one epoch, one writer."""
    import subprocess
    import sys

    import yaml

    from yolo_prune.data.synthetic import make_synthetic_dataset
    from yolo_prune.paths import MODEL_CFGS_DIR, REPO_ROOT

    data = make_synthetic_dataset(tmp_path / "data", n_train=4, n_val=2, img_size=64, seed=0, profile="hard")
    cfg = yaml.safe_load((MODEL_CFGS_DIR / "training" / "yolov7-tiny.yaml").read_text())
    cfg["width_multiple"] = 0.125
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD), "--master_port",
           str(_free_port()), str(REPO_ROOT / "scripts" / "finetune.py"), "--cfg", str(tmp_path / "tiny.yaml"),
           "--data", str(data), "--epochs", "1", "--img", "64", "--batch", "2", "--workers", "0",
           "--device", "cpu", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "weights" / "last.pt").is_file() and (out / "weights" / "best.pt").is_file()
    assert len((out / "results.csv").read_text().splitlines()) == 2  # one header, one epoch, one writer
    assert done.stdout.count("fine-tuned 1 epochs") == 1  # only rank 0 reports
    assert not list(out.rglob(".*.tmp"))
