"""YOLOv7 training losses (plain / OTA / auxiliary OTA), box helpers, distillation and hyp files.

Models are the project's training cfgs at tiny widths (0.125-0.25) and 64-128 px inputs.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.ops import complete_box_iou_loss

from yolo_prune.adapters.yolov7 import (
    bbox_ciou,
    box_iou,
    build_distill_loss,
    build_yolov7_loss,
    find_candidates,
    scale_hyp_for_model,
)
from yolo_prune.adapters.yolov7.ota import match_image
from yolo_prune.engine.hyp import HypError, load_hyp, validate_hyp
from yolo_prune.paths import HYP_DIR

HYP_FILES = sorted(HYP_DIR.glob("hyp.*.yaml"))


def make_model(cfg: str, *, width: float, nc: int, seed: int = 0) -> nn.Module:
    """A randomly initialised training-cfg model in train mode."""
    from models.yolo import Model, load_cfg

    cfg_dict = load_cfg(cfg)
    cfg_dict["width_multiple"] = width
    torch.manual_seed(seed)
    return Model(cfg_dict, nc=nc).train()


def make_targets(batch_size: int, per_image: int, nc: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    n = batch_size * per_image
    wh = 0.08 + 0.4 * torch.rand(n, 2, generator=gen)
    xy = wh / 2 + (1 - wh) * torch.rand(n, 2, generator=gen)
    image = torch.arange(batch_size).repeat_interleave(per_image).float()[:, None]
    cls = torch.randint(0, nc, (n, 1), generator=gen).float()
    return torch.cat((image, cls, xy, wh), dim=1)


@pytest.fixture(autouse=True)
def single_thread():
    """One intra-op thread: on a shared, busy CPU, more threads make these tiny models much slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def hyp() -> dict:
    return load_hyp(HYP_DIR / "hyp.scratch.tiny.yaml")


@pytest.fixture(scope="module")
def tiny() -> nn.Module:
    return make_model("yolov7-tiny", width=0.25, nc=3)


@pytest.fixture(scope="module")
def w6() -> nn.Module:
    return make_model("yolov7-w6", width=0.125, nc=3)


# -- boxes --------------------------------------------------------------------------------
def test_ciou_identical_boxes_is_one():
    boxes = torch.tensor([[5.0, 5.0, 2.0, 4.0], [0.3, 0.7, 0.5, 0.25]])
    assert torch.allclose(bbox_ciou(boxes, boxes), torch.ones(2), atol=1e-5)
    corners = torch.tensor([[0.0, 0.0, 2.0, 4.0]])
    assert torch.allclose(box_iou(corners, corners), torch.ones(1, 1))


def test_ciou_hand_values():
    a = torch.tensor([[1.0, 1.0, 2.0, 2.0]])  # corners (0, 0, 2, 2)
    disjoint = torch.tensor([[4.0, 1.0, 2.0, 2.0]])  # (3, 0, 5, 2): enclosing box 5 x 2, centres 3 apart
    assert bbox_ciou(a, disjoint).item() == pytest.approx(-9 / 29, abs=1e-5)
    shifted = torch.tensor([[2.0, 1.0, 2.0, 2.0]])  # IoU 2/6, enclosing 3 x 2, centres 1 apart
    assert bbox_ciou(a, shifted).item() == pytest.approx(1 / 3 - 1 / 13, abs=1e-5)
    tall = torch.tensor([[1.0, 1.0, 1.0, 2.0]])  # same centre, IoU 1/2, aspect term v > 0
    v = 4 / math.pi**2 * (math.atan(0.5) - math.atan(1.0)) ** 2
    assert bbox_ciou(a, tall).item() == pytest.approx(0.5 - v * v / (v + 0.5), abs=1e-5)


def test_ciou_matches_torchvision_complete_iou_loss():
    gen = torch.Generator().manual_seed(0)
    xy, wh = torch.rand(64, 2, 2, generator=gen) * 10, torch.rand(64, 2, 2, generator=gen) * 4 + 0.5
    b1, b2 = torch.cat((xy[:, 0], wh[:, 0]), 1), torch.cat((xy[:, 1], wh[:, 1]), 1)
    corners = [torch.cat((b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2), 1) for b in (b1, b2)]
    assert torch.allclose(1 - bbox_ciou(b1, b2), complete_box_iou_loss(*corners), atol=1e-4)


# -- assignment -----------------------------------------------------------------------------
def test_candidates_three_cells_and_anchor_ratio():
    # One box on an 8x8 grid at (2.4, 5.6) cells, 2x2 cells big; anchor 0 fits, anchor 1 is 5x too big.
    targets = torch.tensor([[0.0, 1.0, 0.3, 0.7, 0.25, 0.25]])
    anchors = torch.tensor([[[2.0, 2.0], [10.0, 10.0]]])
    cand = find_candidates([(8, 8)], targets, anchors, anchor_t=4.0, bias=0.5)
    assert set(cand.anchor.tolist()) == {0}
    assert sorted(zip(cand.gi.tolist(), cand.gj.tolist(), strict=True)) == [(1, 5), (2, 5), (2, 6)]
    wide = find_candidates([(8, 8)], targets, anchors, anchor_t=4.0, bias=1.0)
    assert sorted(zip(wide.gi.tolist(), wide.gj.tolist(), strict=True)) == [(1, 5), (2, 4), (2, 5), (2, 6), (3, 5)]
    assert wide.target.tolist() == [0] * 5 and wide.image.tolist() == [0] * 5


def test_ota_dynamic_k_picks_best_and_resolves_contested():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    preds = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    scores = torch.full((3, 2), 0.5)
    fg, matched = match_image(gt, torch.tensor([1]), preds, scores, topk_iou=10)
    assert fg.tolist() == [True, False, False] and matched.tolist() == [0]  # k = int(1 + 1/3 + 0) = 1
    # Two identical targets of different classes claim the one prediction: the class it scores wins.
    scores = torch.tensor([[0.1, 0.9]])
    fg, matched = match_image(gt.repeat(2, 1), torch.tensor([0, 1]), preds[:1], scores, topk_iou=10)
    assert fg.tolist() == [True] and matched.tolist() == [1]


# -- the detection loss -------------------------------------------------------------------
@pytest.mark.parametrize("loss_ota", [0, 1])
def test_loss_finite_positive_and_reaches_every_map(tiny, hyp, loss_ota):
    imgs = torch.rand(2, 3, 96, 128)
    targets = make_targets(2, 3, nc=3)
    tiny.zero_grad()
    outputs = tiny(imgs)
    loss, items = build_yolov7_loss(tiny, {**hyp, "loss_ota": loss_ota})(outputs, targets, imgs)
    assert items.shape == (3,) and torch.isfinite(loss) and loss.item() > 0
    assert (items > 0).all() and not items.requires_grad
    assert loss.item() == pytest.approx(2 * items.sum().item(), rel=1e-5)  # loss * batch size
    grads = torch.autograd.grad(loss, outputs, retain_graph=True)
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    loss.backward()
    assert all(p.grad is not None for p in tiny.parameters() if p.requires_grad)


def test_objectness_of_blank_maps_by_hand(tiny, hyp):
    # All-zero logits, no targets: every cell's objectness BCE is ln 2, levels weighted 4.0, 1.0, 0.4.
    maps = [torch.zeros(2, 3, s, s, 8) for s in (16, 8, 4)]
    _, items = build_yolov7_loss(tiny, hyp, img_size=128)(maps, torch.zeros(0, 6), None)
    obj_gain = hyp["obj"] * (128 / 640) ** 2  # 3 levels: the 3 / nl factor is 1
    assert items.tolist() == pytest.approx([0.0, obj_gain * 5.4 * math.log(2), 0.0], rel=1e-5)


def test_objectness_target_carries_no_gradient_into_boxes(tiny, hyp):
    maps = [torch.randn(1, 3, s, s, 8, generator=torch.Generator().manual_seed(s)).requires_grad_()
            for s in (16, 8, 4)]
    targets = torch.tensor([[0.0, 1.0, 0.4, 0.6, 0.3, 0.2]])
    only_obj = {**hyp, "box": 0.0, "cls": 0.0, "loss_ota": 0}
    loss, items = build_yolov7_loss(tiny, only_obj, img_size=128)(maps, targets, None)
    assert items[1] > 0
    grads = torch.autograd.grad(loss, maps)
    assert all(g[..., :4].abs().sum() == 0 and g[..., 4].abs().sum() > 0 for g in grads)


def test_plain_and_ota_assign_differently(tiny, hyp):
    imgs = torch.rand(2, 3, 128, 128)
    targets = make_targets(2, 4, nc=3, seed=1)
    with torch.no_grad():
        outputs = tiny(imgs)
    plain = build_yolov7_loss(tiny, {**hyp, "loss_ota": 0})(outputs, targets, imgs)[1]
    ota = build_yolov7_loss(tiny, {**hyp, "loss_ota": 1})(outputs, targets, imgs)[1]
    assert not torch.allclose(plain, ota)


def test_no_targets_gives_only_objectness(tiny, hyp):
    imgs = torch.rand(2, 3, 64, 64)
    for loss_ota in (0, 1):
        loss, items = build_yolov7_loss(tiny, {**hyp, "loss_ota": loss_ota})(tiny(imgs), torch.zeros(0, 6), imgs)
        assert items[0] == 0 and items[2] == 0 and items[1] > 0
        assert loss.requires_grad and torch.isfinite(loss)


def test_image_size_and_eval_output_handling(tiny, hyp):
    imgs = torch.rand(2, 3, 64, 64)
    targets = make_targets(2, 2, nc=3, seed=2)
    with torch.no_grad():
        outputs = tiny(imgs)
    loss_fn = build_yolov7_loss(nn.DataParallel(tiny), hyp)  # wrapper is unwrapped
    first = loss_fn(outputs, targets, imgs)[1]
    assert torch.allclose(loss_fn(outputs, targets, None)[1], first)  # size derived from the maps
    assert torch.allclose(loss_fn((torch.zeros(1), outputs), targets, imgs)[1], first)  # eval (pred, maps)
    explicit = build_yolov7_loss(tiny, hyp, img_size=64)(outputs, targets, imgs)[1]
    assert torch.allclose(explicit, first)
    bigger = build_yolov7_loss(tiny, hyp, img_size=128)(outputs, targets, imgs)[1]
    assert bigger[1] == pytest.approx(4 * first[1].item(), rel=1e-5)  # obj gain ~ (img_size / 640)^2
    with pytest.raises(ValueError, match="model.train"):
        loss_fn(outputs[:2], targets, imgs)
    with pytest.raises(ValueError, match="nc=3"):
        loss_fn(outputs, torch.tensor([[0.0, 7.0, 0.5, 0.5, 0.2, 0.2]]), imgs)


def test_label_smoothing_and_focal_change_the_loss(tiny, hyp):
    imgs = torch.rand(2, 3, 64, 64)
    targets = make_targets(2, 2, nc=3, seed=3)
    with torch.no_grad():
        outputs = tiny(imgs)
    base = build_yolov7_loss(tiny, hyp)(outputs, targets, imgs)[1]
    smooth = build_yolov7_loss(tiny, {**hyp, "label_smoothing": 0.2})(outputs, targets, imgs)[1]
    focal = build_yolov7_loss(tiny, {**hyp, "fl_gamma": 1.5})(outputs, targets, imgs)[1]
    assert smooth[2] != base[2] and smooth[0] == base[0]
    assert focal[1] < base[1]  # focal down-weights the easy background cells


def test_aux_head_loss_on_w6(w6, hyp):
    head = w6.model[-1]
    imgs = torch.rand(2, 3, 128, 128)
    targets = make_targets(2, 3, nc=3, seed=4)
    outputs = w6(imgs)
    assert type(head).__name__ == "IAuxDetect" and len(outputs) == 2 * head.nl
    loss_fn = build_yolov7_loss(w6, {**hyp, "loss_ota": 0})  # IAuxDetect always uses aux OTA
    loss, items = loss_fn(outputs, targets, imgs)
    lead_only = loss_fn(outputs[: head.nl], targets, imgs)[1]
    assert torch.isfinite(loss) and (items > lead_only).all()  # aux terms add 0.25x
    grads = torch.autograd.grad(loss, outputs)
    assert all(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("loss_ota", [0, 1])
def test_loss_falls_when_overfitting_two_images(hyp, loss_ota):
    model = make_model("yolov7-tiny", width=0.25, nc=2, seed=1)
    imgs = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    targets = torch.tensor([[0, 0, 0.5, 0.5, 0.4, 0.5], [0, 1, 0.25, 0.3, 0.3, 0.2], [1, 1, 0.6, 0.7, 0.5, 0.4]])
    loss_fn = build_yolov7_loss(model, {**hyp, "loss_ota": loss_ota})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(40):
        loss, _ = loss_fn(model(imgs), targets, imgs)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) < 0.7 * sum(losses[:5])  # seen: ~0.3 (OTA), ~0.5 (plain)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_loss_on_cuda_with_fp16_maps_matches_cpu(tiny, hyp):
    imgs = torch.rand(2, 3, 128, 128)
    targets = make_targets(2, 3, nc=3, seed=6)
    with torch.no_grad():
        outputs = tiny(imgs)
    on_cpu = build_yolov7_loss(tiny, hyp)(outputs, targets, imgs)[1]
    model = copy.deepcopy(tiny).cuda()
    with torch.autocast("cuda"):
        items = build_yolov7_loss(model, hyp)([o.cuda().half() for o in outputs], targets, imgs.cuda())[1]
    assert items.device.type == "cuda" and torch.allclose(items.cpu(), on_cpu, rtol=5e-2, atol=1e-4)


def test_scale_hyp_for_model():
    hyp = {"box": 0.05, "cls": 0.3, "obj": 0.7, "lr0": 0.01}
    assert scale_hyp_for_model(hyp, nc=80, nl=3, img_size=640) == pytest.approx(hyp)
    scaled = scale_hyp_for_model(hyp, nc=20, nl=4, img_size=1280)
    assert scaled == pytest.approx({"box": 0.0375, "cls": 0.05625, "obj": 2.1, "lr0": 0.01})
    assert hyp["box"] == 0.05  # the input is not modified


def test_build_rejects_incomplete_hyp_and_non_yolo_model(tiny, hyp):
    with pytest.raises(KeyError, match="anchor_t"):
        build_yolov7_loss(tiny, {k: v for k, v in hyp.items() if k != "anchor_t"})
    with pytest.raises(TypeError, match="not a YOLOv7 model"):
        build_yolov7_loss(nn.Conv2d(3, 3, 1), hyp)


# -- distillation ---------------------------------------------------------------------------
def test_distill_zero_for_identical_positive_otherwise_student_only_grads():
    gen = torch.Generator().manual_seed(0)
    teacher = [torch.randn(2, 3, s, s, 8, generator=gen) for s in (8, 4)]
    distill = build_distill_loss(temperature=2.0, weight=1.0)
    same, item = distill([t.clone().requires_grad_() for t in teacher], teacher, None)
    assert same.item() == pytest.approx(0.0, abs=1e-6) and item.shape == (1,)
    student = [(t + 0.5 * torch.randn(t.shape, generator=gen)).requires_grad_() for t in teacher]
    teacher_leaf = [t.clone().requires_grad_() for t in teacher]
    loss, item = distill(student, teacher_leaf, None)
    assert loss.item() > 0 and loss.item() == pytest.approx(2 * item.item(), rel=1e-5)
    loss.backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in student)
    assert all(t.grad is None for t in teacher_leaf)
    doubled = build_distill_loss(weight=2.0, temperature=2.0)(student, teacher, None)[0]
    assert doubled.item() == pytest.approx(2 * loss.item(), rel=1e-5)


def test_distill_between_real_models(w6):
    teacher = copy.deepcopy(w6).eval()
    student = copy.deepcopy(w6).eval()
    imgs = torch.rand(2, 3, 128, 128)
    distill = build_distill_loss(student, teacher, {"distill_temperature": 1.0})
    with torch.no_grad():
        teacher_out = teacher(imgs)  # eval-mode (pred, lead maps)
        assert distill(student(imgs), teacher_out, imgs)[0].item() == pytest.approx(0.0, abs=1e-6)
        for p in student.parameters():
            p.add_(0.05 * torch.randn_like(p))
    student.train()  # train mode: 2 * nl maps; only the lead maps are distilled
    assert distill(student(imgs), teacher_out, imgs)[0].item() > 0
    with pytest.raises(ValueError, match="same classes"):
        distill([m[..., :6] for m in teacher_out[1]], teacher_out, imgs)


# -- hyper-parameter files ------------------------------------------------------------------
@pytest.mark.parametrize("path", HYP_FILES, ids=[p.name for p in HYP_FILES])
def test_hyp_files_load(path: Path):
    hyp = load_hyp(path)
    assert hyp["loss_ota"] in (0, 1) and hyp["label_smoothing"] == 0.0 and 0 < hyp["lr0"] <= 0.01


def test_hyp_errors(tmp_path: Path):
    good = load_hyp(HYP_DIR / "hyp.scratch.p5.yaml")
    typo = {**good, "mosiac": 1.0}
    with pytest.raises(HypError, match="Did you mean 'mosaic'"):
        validate_hyp(typo)
    missing = {k: v for k, v in good.items() if k not in ("lr0", "box")}
    with pytest.raises(HypError, match="lr0, box"):
        validate_hyp(missing)
    for bad in ("abc", True, None, float("nan")):
        with pytest.raises(HypError, match="lrf must be a finite number"):
            validate_hyp({**good, "lrf": bad})
    with pytest.raises(HypError, match="loss_ota"):
        validate_hyp({**good, "loss_ota": 2})
    path = tmp_path / "hyp.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(HypError, match="mapping"):
        load_hyp(path)
    with pytest.raises(FileNotFoundError):
        load_hyp(tmp_path / "absent.yaml")
