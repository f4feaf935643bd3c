"""YOLOv7 model and detection heads, at the import path official checkpoints pickle (``models.yolo``).

``Model`` builds a network from a YOLOv7 cfg (yaml path or dict) with ``parse_model``. The cfg's
string arguments (``nc``, ``anchors``, ``None``, ``nn.LeakyReLU(0.1)``) are resolved by a small
parser, never by ``eval``; module names are looked up in ``MODULES``.

Output contract (docs/CONTRACTS.md): train mode returns the list of raw maps
``[B, na, ny, nx, no]`` (IAuxDetect: lead maps then aux maps); eval mode returns
``(pred [B, N, no], maps)`` with pred sigmoid-ed and decoded to input pixels.
"""
from __future__ import annotations

import ast
import copy
import difflib
import logging
import math
import re
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from models.common import (
    MP,
    SP,
    SPPCSPC,
    Concat,
    Conv,
    DownC,
    ImplicitA,
    ImplicitM,
    ReOrg,
    RepConv,
    Shortcut,
)

logger = logging.getLogger(__name__)

def _cfg_root() -> Path:
    """``configs/models`` where ``yolo_prune.paths`` finds it: in the installed package (a wheel), else the checkout.

    ``models`` is the lowest layer and imports nothing of yolo_prune, so it looks for the folder itself.
    """
    here = Path(__file__).resolve().parents[1]
    for root in (here / "yolo_prune" / "configs" / "models", here / "configs" / "models"):
        if root.is_dir():
            return root
    return here / "configs" / "models"


CFG_ROOT = _cfg_root()


class _YoloHead(nn.Module):
    """Shared decoding of the anchor-based YOLOv7 heads (not pickled itself)."""

    stride = None  # set per instance while building
    export = False  # class-level flags read by official export code; never changed at run time
    end2end = False
    include_nms = False
    concat = False

    def _init_anchors(self, nc: int, anchors: Any) -> None:
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.grid = [torch.zeros(1)] * self.nl
        a = torch.tensor(anchors).float().view(self.nl, -1, 2)
        self.register_buffer("anchors", a)  # [nl, na, 2], divided by stride once built
        self.register_buffer("anchor_grid", a.clone().view(self.nl, 1, -1, 1, 1, 2))  # pixels

    def _to_maps(self, i: int, t: torch.Tensor) -> torch.Tensor:
        """``[B, na*no, ny, nx] -> [B, na, ny, nx, no]``."""
        bs, _, ny, nx = t.shape
        return t.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()

    def _decode(self, i: int, xi: torch.Tensor) -> torch.Tensor:
        """Raw map of level ``i`` -> ``[B, na*ny*nx, no]`` boxes in input pixels (not in place)."""
        bs, _, ny, nx, _ = xi.shape
        grid = self.grid[i]
        if grid.shape[2:4] != xi.shape[2:4] or grid.device != xi.device or grid.dtype != xi.dtype:
            self.grid[i] = grid = self._make_grid(nx, ny).to(device=xi.device, dtype=xi.dtype)
        y = xi.sigmoid()
        xy = (y[..., 0:2] * 2.0 - 0.5 + grid) * self.stride[i].to(xi.device)
        wh = (y[..., 2:4] * 2) ** 2 * self.anchor_grid[i].to(xi.dtype)
        return torch.cat((xy, wh, y[..., 4:]), -1).view(bs, -1, self.no)

    def _finish(self, z: list[torch.Tensor], x: list[torch.Tensor]) -> Any:
        """Packs eval output the way the official class flags ask (default: ``(pred, maps)``)."""
        if self.end2end or self.concat:
            return torch.cat(z, 1)
        if self.include_nms:
            return (self.convert(z),)
        return torch.cat(z, 1), x

    @staticmethod
    def _make_grid(nx: int = 20, ny: int = 20) -> torch.Tensor:
        yv, xv = torch.meshgrid(torch.arange(ny), torch.arange(nx), indexing="ij")
        return torch.stack((xv, yv), 2).view((1, 1, ny, nx, 2)).float()

    @staticmethod
    def convert(z: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(boxes xyxy [B, N, 4], scores = obj * cls [B, N, nc])`` for export with NMS."""
        z = torch.cat(z, 1)
        box, conf, score = z[:, :, :4], z[:, :, 4:5], z[:, :, 5:]
        matrix = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 1], [-0.5, 0, 0.5, 0], [0, -0.5, 0, 0.5]],
                              dtype=z.dtype, device=z.device)
        return box @ matrix, score * conf

    def _is_training(self) -> bool:
        return self.training or self.export

    def fuseforward(self, x: list[torch.Tensor]) -> Any:
        """Forward with the implicit terms already folded into ``m`` (lead maps only)."""
        x = list(x[: self.nl])
        z = []
        for i in range(self.nl):
            x[i] = self._to_maps(i, self.m[i](x[i]))
            if not self._is_training():
                z.append(self._decode(i, x[i]))
        return x if self._is_training() else self._finish(z, x)

    @torch.no_grad()
    def fuse(self) -> None:
        """Folds ``ia`` (added before ``m``) and ``im`` (multiplied after) into ``m`` in place."""
        if "forward" in self.__dict__:  # already switched to fuseforward: folding twice is wrong
            return
        for conv, ia, im in zip(self.m, self.ia, self.im, strict=True):
            w = conv.weight.reshape(conv.weight.shape[0], -1)  # [out, in] of the 1x1 conv
            conv.bias += (w @ ia.implicit.reshape(-1, 1).to(w.dtype)).squeeze(1)
            scale = im.implicit.reshape(-1).to(w.dtype)
            conv.bias *= scale
            conv.weight *= scale.reshape(-1, 1, 1, 1)
        # Neutral implicits: the official loader fuses every model it loads again, which must
        # then be a no-op (it would fold the terms a second time otherwise).
        for ia, im in zip(self.ia, self.im, strict=True):
            ia.implicit.zero_()
            im.implicit.fill_(1.0)
        self.forward = self.fuseforward  # official convention


class Detect(_YoloHead):
    """Plain YOLO head: one 1x1 conv per level (deploy cfgs)."""

    def __init__(self, nc: int = 80, anchors: Any = (), ch: Any = ()) -> None:
        super().__init__()
        self._init_anchors(nc, anchors)
        self.m = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch)

    def forward(self, x: list[torch.Tensor]) -> Any:
        """Raw maps in training mode; decoded predictions and maps in eval mode."""
        return self.fuseforward(x)

    def fuse(self) -> None:
        """Nothing to fold in a plain head."""


class IDetect(_YoloHead):
    """YOLOR head: ``im * m(ia + x)`` per level (training cfgs of P5 models)."""

    def __init__(self, nc: int = 80, anchors: Any = (), ch: Any = ()) -> None:
        super().__init__()
        self._init_anchors(nc, anchors)
        self.m = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch)
        self.ia = nn.ModuleList(ImplicitA(x) for x in ch)
        self.im = nn.ModuleList(ImplicitM(self.no * self.na) for _ in ch)

    def forward(self, x: list[torch.Tensor]) -> Any:
        """Like ``Detect``, with the implicit terms around each output conv."""
        x = list(x)
        z = []
        for i in range(self.nl):
            x[i] = self._to_maps(i, self.im[i](self.m[i](self.ia[i](x[i]))))
            if not self._is_training():
                z.append(self._decode(i, x[i]))
        return x if self._is_training() else self._finish(z, x)


class IAuxDetect(_YoloHead):
    """YOLOR head with auxiliary outputs (``m2``) on the P6 models; inputs are lead then aux maps."""

    def __init__(self, nc: int = 80, anchors: Any = (), ch: Any = ()) -> None:
        super().__init__()
        self._init_anchors(nc, anchors)
        self.m = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch[: self.nl])
        self.m2 = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch[self.nl:])
        self.ia = nn.ModuleList(ImplicitA(x) for x in ch[: self.nl])
        self.im = nn.ModuleList(ImplicitM(self.no * self.na) for _ in ch[: self.nl])

    def forward(self, x: list[torch.Tensor]) -> Any:
        """Lead maps then auxiliary maps in training mode; the lead predictions in eval mode."""
        x = list(x)
        z = []
        for i in range(self.nl):
            x[i] = self._to_maps(i, self.im[i](self.m[i](self.ia[i](x[i]))))
            x[i + self.nl] = self._to_maps(i, self.m2[i](x[i + self.nl]))
            if not self._is_training():
                z.append(self._decode(i, x[i]))
        return x if self._is_training() else self._finish(z, x[: self.nl])


HEADS = (Detect, IDetect, IAuxDetect)

# cfg module name -> class. Extend here (never with eval) when a cfg needs a new block.
MODULES: dict[str, type[nn.Module]] = {
    "Conv": Conv, "RepConv": RepConv, "DownC": DownC, "SPPCSPC": SPPCSPC, "Concat": Concat,
    "Shortcut": Shortcut, "MP": MP, "SP": SP, "ReOrg": ReOrg, "Detect": Detect, "IDetect": IDetect,
    "IAuxDetect": IAuxDetect, "nn.Conv2d": nn.Conv2d, "nn.BatchNorm2d": nn.BatchNorm2d,
    "nn.Upsample": nn.Upsample, "nn.MaxPool2d": nn.MaxPool2d, "nn.Identity": nn.Identity,
}
_CHANNEL_MODULES = (nn.Conv2d, Conv, RepConv, DownC, SPPCSPC)  # first arg is output channels
_REPEAT_MODULES = (DownC, SPPCSPC)  # take the depth-scaled repeat count as third argument
_ACTIVATIONS: dict[str, Callable[..., nn.Module]] = {
    "LeakyReLU": nn.LeakyReLU, "SiLU": nn.SiLU, "ReLU": nn.ReLU, "Hardswish": nn.Hardswish,
    "Identity": nn.Identity, "Sigmoid": nn.Sigmoid, "Mish": nn.Mish,
}
_ACTIVATION_RE = re.compile(r"^nn\.(\w+)\((.*)\)$")


def unknown_name_message(kind: str, name: str, known: Any) -> str:
    """'unknown X 'foo'. Did you mean 'fo'? Known X names: ...' (the wording of ``yolo_prune.registry``)."""
    known_names = sorted(known)
    close = difflib.get_close_matches(str(name), known_names, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"unknown {kind} {name!r}.{hint} Known {kind} names: {', '.join(known_names)}"


def make_divisible(x: float, divisor: int) -> int:
    """``x`` rounded up to a multiple of ``divisor`` (channel counts of scaled cfgs)."""
    return math.ceil(x / divisor) * divisor


def _resolve_module(name: Any) -> type[nn.Module]:
    if not isinstance(name, str):
        return name
    if name not in MODULES:
        raise ValueError(unknown_name_message("cfg module", name, MODULES) + " (add it to models.yolo.MODULES)")
    return MODULES[name]


def _resolve_arg(a: Any, nc: int, anchors: Any) -> Any:
    """Replaces the symbolic strings YOLOv7 cfgs use; other strings (e.g. 'nearest') stay."""
    if not isinstance(a, str):
        return a
    if a in ("None", "nc", "anchors"):
        return {"None": None, "nc": nc, "anchors": anchors}[a]
    match = _ACTIVATION_RE.match(a.strip())
    if match:
        name, params = match.groups()
        if name not in _ACTIVATIONS:
            raise ValueError(unknown_name_message("activation", name, _ACTIVATIONS))
        values = ast.literal_eval(f"({params},)") if params.strip() else ()
        return _ACTIVATIONS[name](*values)
    return a


def parse_model(d: dict, ch: list[int]) -> tuple[nn.Sequential, list[int]]:
    """Builds the layer list of a YOLOv7 cfg dict; returns ``(layers, save)``.

    Each layer gets the official bookkeeping attributes ``i, f, type, np``; ``save`` lists the
    layer indices whose outputs later layers read.
    """
    anchors, nc, gd, gw = d["anchors"], d["nc"], d["depth_multiple"], d["width_multiple"]
    na = (len(anchors[0]) // 2) if isinstance(anchors, list) else anchors
    no = na * (nc + 5)
    layers, save, c2 = [], [], ch[-1]
    for i, (f, n, m, args) in enumerate(d["backbone"] + d["head"]):
        m = _resolve_module(m)
        args = [_resolve_arg(a, nc, anchors) for a in args]
        n = max(round(n * gd), 1) if n > 1 else n
        if m in _CHANNEL_MODULES:
            c1, c2 = ch[f], args[0]
            if c2 != no:  # the output conv keeps exactly na * (nc + 5) channels
                c2 = make_divisible(c2 * gw, 8)
            args = [c1, c2, *args[1:]]
            if m in _REPEAT_MODULES:
                args.insert(2, n)
                n = 1
        elif m is nn.BatchNorm2d:
            args = [ch[f]]
        elif m is Concat:
            c2 = sum(ch[x] for x in f)
        elif m is Shortcut:
            c2 = ch[f[0]]
        elif m in HEADS:
            args.append([ch[x] for x in f])
            if isinstance(args[1], int):  # a number of anchors instead of a list
                args[1] = [list(range(args[1] * 2))] * len(f)
        elif m is ReOrg:
            c2 = ch[f] * 4
        else:
            c2 = ch[f]
        layer = nn.Sequential(*(m(*args) for _ in range(n))) if n > 1 else m(*args)
        layer.i, layer.f, layer.type = i, f, f"{m.__module__}.{m.__qualname__}"
        layer.np = sum(p.numel() for p in layer.parameters())
        save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
        layers.append(layer)
        if i == 0:
            ch = []
        ch.append(c2)
    return nn.Sequential(*layers), sorted(save)


def find_cfg(name: str | Path, kind: str = "training") -> Path:
    """Resolves a cfg path or a family name (``'yolov7-tiny'``, ``'deploy/yolov7'``) in ``configs/models``."""
    path = Path(name)
    if path.is_file():
        return path
    if path.parent.name in ("training", "deploy"):
        kind = path.parent.name
    candidate = CFG_ROOT / kind / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
    if candidate.is_file():
        return candidate
    known = sorted(p.stem for p in (CFG_ROOT / kind).glob("*.yaml"))
    raise FileNotFoundError(
        f"model cfg {str(name)!r} is neither a file nor a {kind} cfg name. "
        + unknown_name_message("cfg", path.stem, known)
    )


def load_cfg(cfg: str | Path | dict) -> dict:
    """A deep copy of ``cfg`` if it is a dict, else the parsed yaml file / named cfg."""
    if isinstance(cfg, dict):
        return copy.deepcopy(cfg)
    with open(find_cfg(cfg)) as f:
        return yaml.safe_load(f)


class Model(nn.Module):
    """A YOLOv7 detector built from a cfg; attribute layout as in the official ``Model``."""

    def __init__(self, cfg: str | Path | dict = "yolov7.yaml", ch: int = 3, nc: int | None = None,
                 anchors: Any = None) -> None:
        super().__init__()
        self.traced = False
        if not isinstance(cfg, dict):
            self.yaml_file = Path(cfg).name
        self.yaml = load_cfg(cfg)
        ch = self.yaml["ch"] = self.yaml.get("ch", ch)
        if nc and nc != self.yaml["nc"]:
            logger.info("Overriding model.yaml nc=%s with nc=%s", self.yaml["nc"], nc)
            self.yaml["nc"] = nc
        if anchors:
            self.yaml["anchors"] = anchors
        self.model, self.save = parse_model(copy.deepcopy(self.yaml), ch=[ch])
        self.names = [str(i) for i in range(self.yaml["nc"])]
        self.nc = self.yaml["nc"]
        self.hyp: dict = {}
        self.gr = 1.0
        self.class_weights = torch.ones(self.nc)
        head = self.model[-1]
        if isinstance(head, HEADS):
            self._build_strides(ch)
            self._initialize_biases()
        initialize_weights(self)

    def _build_strides(self, ch: int) -> None:
        """Measures each level's stride with one dummy forward (batch-norm statistics untouched)."""
        head, s = self.model[-1], 128  # official: 256; any multiple of the largest stride gives the same
        was_training = self.training
        self.eval()
        head.train()
        with torch.no_grad():
            maps = self.forward_once(torch.zeros(1, ch, s, s))
        self.train(was_training)
        head.stride = torch.tensor([s / x.shape[-2] for x in maps[: head.nl]])
        check_anchor_order(head)
        head.anchors /= head.stride.view(-1, 1, 1)
        self.stride = head.stride

    @torch.no_grad()
    def _initialize_biases(self) -> None:
        """Objectness/class bias priors (RetinaNet section 3.3): ~8 objects per 640 image."""
        head = self.model[-1]
        convs = [(head.m, head.stride)] + ([(head.m2, head.stride)] if isinstance(head, IAuxDetect) else [])
        for modules, strides in convs:
            for conv, s in zip(modules, strides, strict=True):
                b = conv.bias.view(head.na, -1)
                b[:, 4] += math.log(8 / (640 / s) ** 2)
                b[:, 5:] += math.log(0.6 / (head.nc - 0.99))

    def forward(self, x: torch.Tensor, augment: bool = False, profile: bool = False) -> Any:
        """Runs the network (see the module docstring for the output layout).

        Args:
            x: Images ``[B, 3, H, W]`` scaled to 0-1, sides multiples of the largest stride.
            augment: Test-time augmentation (eval mode): returns ``(pred, None)``.
            profile: Accepted for callers written for the official signature; ignored.
        """
        if augment:
            return self._forward_augment(x)
        return self.forward_once(x)

    def forward_once(self, x: torch.Tensor, profile: bool = False) -> Any:
        """One pass through the layer list, keeping the outputs later layers read (``save``)."""
        y: list[torch.Tensor | None] = []
        for m in self.model:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            if getattr(self, "traced", False) and isinstance(m, HEADS):
                break
            x = m(x)
            y.append(x if m.i in self.save else None)
        return x

    def _forward_augment(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        """Test-time augmentation as in the official code: scales 1, 0.83, 0.67; middle one flipped."""
        img_size = x.shape[-2:]
        outputs = []
        for scale, flip in zip((1, 0.83, 0.67), (None, 3, None), strict=True):
            xi = scale_img(x.flip(flip) if flip else x, scale, gs=int(self.stride.max()))
            yi = self.forward_once(xi)[0]
            yi = torch.cat((yi[..., :4] / scale, yi[..., 4:]), -1)
            if flip == 3:
                yi = torch.cat((img_size[1] - yi[..., :1], yi[..., 1:]), -1)
            outputs.append(yi)
        return torch.cat(outputs, 1), None

    def fuse(self) -> "Model":
        """Folds Conv+BN, re-parameterises RepConv and folds implicit head terms, in place."""
        for m in list(self.model.modules()):
            if isinstance(m, RepConv):
                m.fuse_repvgg_block()
            elif type(m) is Conv:
                m.fuse()
            elif isinstance(m, (IDetect, IAuxDetect)):
                m.fuse()
        return self

    def _apply(self, fn: Callable, recurse: bool = True) -> "Model":
        """Moves/casts the head's non-buffer tensors (``stride``, ``grid``) with the model."""
        super()._apply(fn, recurse)
        head = self.model[-1]
        if isinstance(head, HEADS) and isinstance(head.stride, torch.Tensor):
            head.stride = fn(head.stride)
            head.grid = [fn(g) for g in head.grid]
            self.stride = head.stride
        return self

    def info(self) -> dict:
        """Parameter count and layer count (the official method prints; this returns)."""
        return {"layers": len(list(self.modules())), "params": sum(p.numel() for p in self.parameters())}


def scale_img(img: torch.Tensor, ratio: float = 1.0, gs: int = 32) -> torch.Tensor:
    """Resizes a batch by ``ratio`` and pads it to a multiple of ``gs`` (grey 0.447, as official)."""
    if ratio == 1.0:
        return img
    h, w = img.shape[2:]
    s = (int(h * ratio), int(w * ratio))
    img = F.interpolate(img, size=s, mode="bilinear", align_corners=False)
    h, w = (math.ceil(x * ratio / gs) * gs for x in (h, w))
    return F.pad(img, [0, w - s[1], 0, h - s[0]], value=0.447)


def check_anchor_order(head: nn.Module) -> None:
    """Flips the anchor order if it does not grow with the stride."""
    area = head.anchor_grid.prod(-1).view(-1)
    if (area[-1] - area[0]).sign() != (head.stride[-1] - head.stride[0]).sign():
        head.anchors[:] = head.anchors.flip(0)
        head.anchor_grid[:] = head.anchor_grid.flip(0)


def initialize_weights(model: nn.Module) -> None:
    """Official YOLOv7 defaults: batch-norm eps 1e-3 and momentum 0.03, in-place ReLU-like activations."""
    for m in model.modules():
        if type(m) is nn.BatchNorm2d:
            m.eps = 1e-3
            m.momentum = 0.03
        elif type(m) in (nn.Hardswish, nn.LeakyReLU, nn.ReLU, nn.ReLU6):
            m.inplace = True


def refresh_bookkeeping(model: nn.Module) -> nn.Module:
    """Recomputes attributes that mirror tensor shapes, after channel pruning changed the tensors.

    Updates ``RepConv.in_channels/out_channels/groups``, ``ImplicitA/M.channel``, each layer's
    ``np`` and clears cached head grids. Returns ``model``.
    """
    for m in model.modules():
        if isinstance(m, RepConv):
            conv = m.rbr_reparam if hasattr(m, "rbr_reparam") else m.rbr_dense[0]
            m.groups = conv.groups
            m.in_channels = conv.weight.shape[1] * conv.groups
            m.out_channels = conv.weight.shape[0]
        elif isinstance(m, (ImplicitA, ImplicitM)):
            m.channel = m.implicit.shape[1]
        elif isinstance(m, HEADS):
            m.grid = [torch.zeros(1)] * m.nl
    layers = getattr(model, "model", None)
    if isinstance(layers, nn.Sequential):
        for layer in layers:
            if hasattr(layer, "np"):
                layer.np = sum(p.numel() for p in layer.parameters())
    return model
