"""A pruned YOLOv7 model written back as a YOLOv7 cfg, so the official trainer keeps it.

Official ``train.py --weights pruned.pt`` builds ``Model(opt.cfg or ckpt['model'].yaml)``
and copies over only the tensors whose shapes fit: with the original cfg in ``model.yaml``
it would train the unpruned network from scratch. Each cfg layer ``[from, number, module,
args]`` carries its output channels as ``args[0]`` (scaled by ``width_multiple`` and rounded
up to a multiple of 8), so a pruned model can be described exactly when:

* every layer's width is a multiple of 8 (prune with ``round_to=8``), or the head's ``na * (nc + 5)``;
* the widths a block derives from its one argument agree with the pruned tensors:
  ``SPPCSPC`` has one hidden width ``int(2 * c2 * e)`` for ``cv1`` .. ``cv6`` (``e`` is written
  when it is not 0.5), ``DownC`` gives both branches ``c2 // 2`` and ``cv1`` its input width,
  a training ``RepConv`` has its identity branch exactly when it keeps width at stride 1.

``pruned_cfg`` writes the cfg with ``width_multiple: 1.0`` and explicit widths, then builds
``models.yolo.Model`` from it and checks that every tensor has the pruned model's shape.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from models import yolo
from models.common import SPPCSPC, Conv, DownC, RepConv
from yolo_prune.adapters.base import CfgForm

_OFFICIAL_DIVISOR = 8  # parse_model rounds every width up to a multiple of this


class _NotExpressible(ValueError):
    """One layer's pruned widths have no cfg form; the message names the layer and why."""


def pruned_cfg(model: nn.Module) -> CfgForm:
    """The YOLOv7 cfg that rebuilds ``model`` (pruned widths included), or the reason there is none.

    An unpruned model keeps its own cfg unchanged. ``model`` is not modified.

    Example:
        >>> form = pruned_cfg(pruned_model)
        >>> rebuilt = yolo.Model(form.cfg)   # same tensor shapes as pruned_model: load_state_dict(strict=True)
    """
    base = getattr(model, "yaml", None)
    if not isinstance(base, dict) or "backbone" not in base or "head" not in base:
        return CfgForm(None, "the model has no YOLOv7 cfg in its 'yaml' attribute to start from")
    if _rebuild_mismatch(model, base) is None:
        return CfgForm(copy.deepcopy(base))
    try:
        cfg = _explicit_widths(model, base)
    except _NotExpressible as e:
        return CfgForm(None, str(e))
    mismatch = _rebuild_mismatch(model, cfg)
    if mismatch is not None:
        return CfgForm(None, f"the cfg written from its widths builds a different network ({mismatch})")
    return CfgForm(cfg)


def _explicit_widths(model: nn.Module, base: dict) -> dict:
    """``base`` with ``width_multiple: 1.0`` and each channel layer's ``args[0]`` set from the tensors."""
    cfg = copy.deepcopy(base)
    cfg["width_multiple"] = 1.0
    head = model.model[-1]
    cfg["nc"] = int(head.nc)
    outputs = int(head.na * head.no)
    entries = cfg["backbone"] + cfg["head"]  # the same lists as in cfg: edited in place
    for i, (layer, entry) in enumerate(zip(model.model, entries, strict=True)):
        if not isinstance(layer, (nn.Conv2d, Conv, RepConv, DownC, SPPCSPC)):
            continue
        c2, extra = _layer_widths(i, layer)
        if c2 % _OFFICIAL_DIVISOR and c2 != outputs:
            raise _NotExpressible(
                f"layer {i} ({type(layer).__name__}) has {c2} output channels, and the official cfg rounds every "
                f"width up to a multiple of {_OFFICIAL_DIVISOR}; prune with round_to=8 (CLI: --round-to 8)")
        entry[3] = [c2, *extra] if extra else [c2, *entry[3][1:]]
    return cfg


def _layer_widths(i: int, layer: nn.Module) -> tuple[int, list]:
    """``(c2, args after c2 when they must change)`` for one channel layer; raises when inexpressible."""
    if isinstance(layer, nn.Conv2d):
        return int(layer.weight.shape[0]), []
    if isinstance(layer, Conv):
        return int(layer.conv.weight.shape[0]), []
    if isinstance(layer, RepConv):
        return _repconv_width(i, layer), []
    if isinstance(layer, DownC):
        return _downc_width(i, layer), []
    return _sppcspc_widths(i, layer)


def _out(conv: Conv) -> int:
    return int(conv.conv.weight.shape[0])


def _repconv_width(i: int, layer: RepConv) -> int:
    conv = layer.rbr_reparam if getattr(layer, "rbr_reparam", None) is not None else layer.rbr_dense[0]
    c1, c2 = int(conv.weight.shape[1] * conv.groups), int(conv.weight.shape[0])
    if getattr(layer, "rbr_reparam", None) is None:
        has_identity = layer.rbr_identity is not None
        if has_identity != (c1 == c2 and conv.stride == (1, 1)):
            raise _NotExpressible(f"layer {i} (RepConv) maps {c1} to {c2} channels "
                                  f"{'with' if has_identity else 'without'} an identity branch, which its cfg "
                                  f"would build {'without' if has_identity else 'with'}")
    return c2


def _downc_width(i: int, layer: DownC) -> int:
    c1, hidden = int(layer.cv1.conv.weight.shape[1]), _out(layer.cv1)
    left, right = _out(layer.cv2), _out(layer.cv3)
    if left != right:
        raise _NotExpressible(f"layer {i} (DownC) has branches of {left} and {right} channels; its cfg gives both "
                              f"c2 // 2 (prune the block's branches alike, e.g. one uniform ratio)")
    if hidden != c1:
        raise _NotExpressible(f"layer {i} (DownC) has a hidden width {hidden} unlike its {c1} input channels, "
                              f"which its cfg ties together")
    return left + right


def _sppcspc_widths(i: int, layer: SPPCSPC) -> tuple[int, list]:
    c2 = _out(layer.cv7)
    hidden = {_out(getattr(layer, f"cv{k}")) for k in range(1, 7)}
    if len(hidden) != 1:
        raise _NotExpressible(f"layer {i} (SPPCSPC) has hidden widths {sorted(hidden)}; its cfg gives cv1 .. cv6 "
                              f"one width (prune them alike, e.g. one uniform ratio)")
    c_ = hidden.pop()
    if c_ == c2:
        return c2, []
    e = c_ / (2 * c2)
    if int(2 * c2 * e) != c_:  # float rounding below the integer: parse_model truncates
        e = (c_ + 0.25) / (2 * c2)
    return c2, [False, 1, e]  # SPPCSPC(c1, c2, n, shortcut, g, e): shortcut and g at their defaults


def _rebuild_mismatch(model: nn.Module, cfg: dict) -> str | None:
    """None when ``Model(cfg)`` has exactly ``model``'s tensors (names and shapes), else the first difference."""
    with torch.random.fork_rng():  # building initialises weights: keep the caller's random stream
        rebuilt = yolo.Model(copy.deepcopy(cfg))
    if _is_fused(model):
        rebuilt.fuse()
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    for key in sorted(want.keys() | got.keys()):
        if want.get(key) != got.get(key):
            return f"{key}: model {want.get(key, 'absent')}, cfg {got.get(key, 'absent')}"
    return None


def _is_fused(model: nn.Module) -> bool:
    """True when ``Model.fuse`` ran: a Conv lost its ``bn``, or a training RepConv its branches."""
    return any((type(m) is Conv and not hasattr(m, "bn"))
               or (isinstance(m, RepConv) and "rbr_dense" in m._modules and m.rbr_dense is None)
               for m in model.modules())
