"""The adapter contract, checked for every registered detector family.

Each family's ``example_model`` (tiny widths) goes through pruning, saving and the loss at
64-160 px: output shapes survive pruning, MACs fall, ratio 0 changes nothing bit for bit,
a saved file loads back (recognised by family) with the same tensors, and every trainable
parameter gets a gradient. A new family registered in ``yolo_prune.adapters`` is tested here
without writing a test.
"""
from __future__ import annotations

import copy
import os

os.environ.setdefault("YOLO_OFFLINE", "1")  # Ultralytics, when installed: no network checks
os.environ.setdefault("YOLO_VERBOSE", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from yolo_prune.adapters import ADAPTERS, adapter_for, get_adapter, load_model  # noqa: E402
from yolo_prune.engine import TrainerCallbacks  # noqa: E402
from yolo_prune.engine.finetune import default_hyp_path  # noqa: E402
from yolo_prune.engine.hyp import load_hyp  # noqa: E402
from yolo_prune.pruning import prune_model  # noqa: E402

IMG = 64  # tracing size (a multiple of every stride)
CHECK_SIZES = ((96, 160), (128, 128))  # output shapes are compared at other sizes than the traced one
NC = 3
# The Python package each family needs beyond this project's own dependencies, if any.
THIRD_PARTY = {"ultralytics": "ultralytics"}


@pytest.fixture(params=ADAPTERS.names())
def family(request):
    """(adapter, a fresh tiny example model) of every registered family."""
    if request.param in THIRD_PARTY:
        pytest.importorskip(THIRD_PARTY[request.param])
    adapter = get_adapter(request.param)
    torch.manual_seed(0)
    return adapter, adapter.example_model(nc=NC)


def _outputs(model, x, *, train: bool):
    """The forward output in train (BN statistics frozen) or eval mode, without gradients."""
    model.train(train)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    with torch.no_grad():
        out = model(x)
    model.eval()
    return out


def _shapes(adapter, model):
    return [adapter.output_shapes(_outputs(model, torch.rand(1, 3, h, w), train=train))
            for h, w in CHECK_SIZES for train in (True, False)]


def test_example_model_matches_its_adapter_and_decodes(family):
    adapter, loaded = family
    assert adapter.matches(loaded.model) and loaded.family == adapter.name and loaded.nc == NC
    pred = adapter.decode(_outputs(loaded.model, torch.rand(2, 3, 96, 128), train=False))
    assert pred.ndim == 3 and pred.shape[0] == 2 and pred.shape[-1] == 5 + NC and torch.isfinite(pred).all()


def test_pruning_keeps_output_shapes_and_macs_fall(family):
    adapter, loaded = family
    shapes = _shapes(adapter, loaded.model)
    result = prune_model(loaded.model, adapter, img_size=IMG, pruning_ratio=0.5)
    assert result.macs_after < 0.75 * result.macs_before
    assert result.params_after < result.params_before
    assert _shapes(adapter, result.model) == shapes


def test_ratio_zero_changes_nothing_bit_for_bit(family):
    adapter, loaded = family
    x = torch.rand(1, 3, 96, 96)
    reference = adapter.decode(_outputs(loaded.model, x, train=False))
    params = sum(p.numel() for p in loaded.model.parameters())
    result = prune_model(copy.deepcopy(loaded.model), adapter, img_size=IMG, pruning_ratio=0.0)
    assert result.params_after == result.params_before == params
    assert result.macs_after == result.macs_before
    assert torch.equal(adapter.decode(_outputs(result.model, x, train=False)), reference)


def test_pruned_model_saves_and_loads_back(family, tmp_path):
    adapter, loaded = family
    prune_model(loaded.model, adapter, img_size=IMG, pruning_ratio=0.5)
    first = adapter.save(loaded, tmp_path / "pruned.pt")
    back = load_model(first)  # the family is recognised from the file alone
    assert back.family == adapter.name and back.names == loaded.names and back.stride == loaded.stride
    saved = dict(back.model.state_dict())
    for name, tensor in loaded.model.state_dict().items():  # every tensor exactly, or as its float16 rounding
        assert torch.equal(saved[name], tensor) or torch.equal(saved[name], tensor.half().to(tensor.dtype)), name
    again = load_model(adapter.save(back, tmp_path / "again.pt"))
    x = torch.rand(1, 3, 96, 128)
    assert torch.equal(adapter.decode(_outputs(again.model, x, train=False)),
                       adapter.decode(_outputs(back.model, x, train=False)))


@pytest.mark.parametrize("pruned", [False, True], ids=["unpruned", "pruned"])
def test_every_trainable_parameter_gets_a_gradient(family, pruned):
    adapter, loaded = family
    model = loaded.model
    if pruned:
        model = prune_model(model, adapter, img_size=IMG, pruning_ratio=0.5).model
    model.train()
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    assert trainable
    loss_fn = adapter.loss(model, load_hyp(default_hyp_path()))
    imgs = torch.rand(2, 3, IMG, IMG)
    targets = torch.tensor([[0, 0, 0.5, 0.5, 0.4, 0.3], [0, 1, 0.3, 0.6, 0.2, 0.2], [1, 2, 0.6, 0.4, 0.3, 0.5]])
    loss, items = loss_fn(model(imgs), targets, imgs)
    assert torch.isfinite(loss) and items.numel() == len(adapter.loss_names)
    loss.backward()
    missing = [name for name, p in trainable if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no (finite) gradient for {missing[:5]}"


class _StopAfterFirstEpoch(TrainerCallbacks):
    def on_epoch_end(self, trainer, epoch, row):
        raise KeyboardInterrupt  # like Ctrl-C once last.pt of epoch 0 is written


@pytest.mark.slow
def test_an_engine_run_resumes_through_its_own_family(family, tmp_path):
    """The generic engine trains the family, and ``--resume`` reads last.pt under that family's allow-list."""
    from yolo_prune.api import finetune
    from yolo_prune.data.synthetic import make_synthetic_dataset
    from yolo_prune.engine import finetune as engine_finetune

    adapter, _ = family
    data = make_synthetic_dataset(tmp_path / "data", n_train=4, n_val=2, img_size=IMG, seed=0)
    names = yaml.safe_load(data.read_text())["names"]
    loaded = adapter.example_model(nc=len(names))
    run = tmp_path / "run"
    settings = dict(epochs=2, img_size=IMG, batch_size=2, nominal_batch=2, workers=0, device="cpu", val=False)
    with pytest.raises(KeyboardInterrupt):
        engine_finetune(loaded, adapter, data=data, out_dir=run, callbacks=_StopAfterFirstEpoch(), **settings)
    last = run / "weights" / "last.pt"
    assert adapter_for(last).name == adapter.name
    resumed, ckpt = adapter.load_training_checkpoint(last)
    assert ckpt["epoch"] == 0 and resumed.family == adapter.name
    result = finetune(resume=run)
    assert result.epochs == 2 and adapter.load_training_checkpoint(last)[1]["epoch"] == 1
