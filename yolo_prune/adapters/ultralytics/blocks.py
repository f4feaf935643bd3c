"""Split-free rewrites of Ultralytics blocks, so torch-pruning can trace and prune them.

Several Ultralytics blocks run one conv and split its output in two (``cv1(x).chunk(2, 1)``
in ``C2f``/``C3k2``, ``cv1(x).split((c, c), 1)`` in ``C2PSA``). The split sizes are fixed
by the module, so a tracer that prunes the conv's channels breaks the index mapping
(torch-pruning 1.6.1 raises ``IndexError`` inside ``C2f``) or loops. Each such block is
rewritten here, before tracing, into a stock Ultralytics block that computes the same
function with two separate convs and no split:

* ``C2f``, ``C3k2``, ``C2fCIB``, ``C2fPSA``, ``RepNCSPELAN4``, ``ELAN1`` -> ``C3f``
  (``[cv2(x), cv1(x), m0(cv1(x)), ...]`` concatenated, the same order as the original);
* ``C2``, ``C2PSA``, ``PSA`` -> ``C3`` (``cat(m(cv1(x)), cv2(x))``; for ``C2PSA``/``PSA``
  the final conv's input channels are reordered to match).

Each half of the original ``cv1`` becomes its own ``Conv`` (conv rows and BatchNorm
entries sliced), so outputs are unchanged. Because the result is built from stock
Ultralytics classes, a pruned checkpoint loads in ``ultralytics.YOLO`` without this
package (and passes Ultralytics' own restricted ``weights_only`` loader). The rewrite
is permanent: after pruning the two halves may differ in width, which no split block can
express.

Attention (``Attention`` inside ``PSABlock``) reshapes its ``qkv`` output per head and
views the attended values back to the block's input width, so its channels are coupled
by count, not by index, which torch-pruning cannot express. It is left whole by choice:
``attention_layers`` lists the convs whose output channels must stay, which keeps each
attention block's residual width; the feed-forward hidden channels of every
``PSABlock`` are still pruned.
"""
from __future__ import annotations

import logging

import torch
from torch import nn
from ultralytics.nn.modules import block as ul_block
from ultralytics.nn.modules.conv import Conv
from ultralytics.nn.modules.head import Detect

LOGGER = logging.getLogger(__name__)

# Blocks that split a conv's output (or their input) in a way no rewrite here handles.
UNSUPPORTED_SPLIT_BLOCKS = ("ADown", "CBLinear", "CBFuse", "C2fAttn", "A2C2f")
# Attributes parse_model sets on every top-level layer; _predict_once routes with them.
_LAYER_ATTRS = ("i", "f", "type", "np")


def split_conv(conv: Conv, sizes: tuple[int, ...]) -> list[Conv]:
    """Cuts an Ultralytics ``Conv`` (conv + BatchNorm + act) into convs of ``sizes`` output channels.

    Raises:
        ValueError: ``conv`` is fused (no BatchNorm) or ``sizes`` do not add up to its width.
    """
    if not hasattr(conv, "bn"):
        raise ValueError("cannot rewrite a fused Ultralytics model (Conv without BatchNorm); "
                         "prune the unfused checkpoint as written by training instead")
    if type(conv) is not Conv or conv.conv.bias is not None:
        raise TypeError(f"only a plain Ultralytics Conv (no conv bias) can be split, got {type(conv).__name__}")
    if sum(sizes) != conv.conv.out_channels:
        raise ValueError(f"split sizes {sizes} do not add up to {conv.conv.out_channels} channels")
    parts, start = [], 0
    for size in sizes:
        parts.append(_conv_rows(conv, slice(start, start + size)))
        start += size
    return parts


def _conv_rows(conv: Conv, rows: slice) -> Conv:
    """A new ``Conv`` keeping only output channels ``rows`` of ``conv`` (weights and BN statistics)."""
    src, bn = conv.conv, conv.bn
    width = rows.stop - rows.start
    part = Conv(src.in_channels, width, act=conv.act)  # shares the activation module, as Ultralytics layers do
    part.conv = nn.Conv2d(src.in_channels, width, src.kernel_size, src.stride, src.padding, src.dilation,
                          src.groups, bias=False, padding_mode=src.padding_mode)
    part.bn.eps, part.bn.momentum = bn.eps, bn.momentum
    part.to(src.weight.device, src.weight.dtype)
    with torch.no_grad():
        part.conv.weight.copy_(src.weight[rows])
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(part.bn, name).copy_(getattr(bn, name)[rows])
        part.bn.num_batches_tracked.copy_(bn.num_batches_tracked)
    for mine, theirs in zip(part.parameters(), conv.parameters(), strict=True):
        mine.requires_grad_(theirs.requires_grad)
    return part.train(conv.training)


def _conv_permute_inputs(conv: Conv, order: torch.Tensor) -> Conv:
    """``conv`` reading its input channels in ``order`` (a permutation), in place."""
    with torch.no_grad():
        conv.conv.weight = nn.Parameter(conv.conv.weight[:, order].clone(),
                                        requires_grad=conv.conv.weight.requires_grad)
    return conv


def _bare(cls: type[nn.Module]) -> nn.Module:
    """An empty instance of an Ultralytics block, filled in by the caller (no random init)."""
    module = cls.__new__(cls)
    nn.Module.__init__(module)
    return module


def c2f_to_c3f(block: nn.Module) -> nn.Module:
    """``C2f``-style block (``chunk(2)`` of ``cv1``, chain of ``m``) -> stock ``C3f`` with equal outputs."""
    elan = isinstance(block, ul_block.RepNCSPELAN4)  # and ELAN1: its chain is cv2, cv3 and cv4 concatenates
    inner = nn.ModuleList([block.cv2, block.cv3]) if elan else block.m
    half = block.cv1.conv.out_channels // 2
    bypass, chained = split_conv(block.cv1, (half, half))
    new = _bare(ul_block.C3f)
    new.cv1, new.cv2, new.cv3, new.m = chained, bypass, block.cv4 if elan else block.cv2, inner
    return new


def split_to_c3(block: nn.Module) -> nn.Module:
    """``C2`` / ``C2PSA`` / ``PSA`` (halves of ``cv1``, ``m`` on one) -> stock ``C3`` with equal outputs.

    ``C3`` computes ``cv3(cat(m(cv1(x)), cv2(x)))``. ``C2`` runs ``m`` on the first half and
    concatenates in that order already; ``C2PSA``/``PSA`` run it on the second half and
    concatenate the bypass first, so ``cv3`` reads its input channels reordered.
    """
    half = block.cv1.conv.out_channels // 2
    first, second = split_conv(block.cv1, (half, half))
    new = _bare(ul_block.C3)
    if isinstance(block, ul_block.C2):
        new.cv1, new.cv2, new.m, new.cv3 = first, second, block.m, block.cv2
        return new
    if isinstance(block, ul_block.PSA):  # PSA inlines one PSABlock: b + attn(b), then + ffn(b)
        psa = _bare(ul_block.PSABlock)
        psa.attn, psa.ffn, psa.add = block.attn, block.ffn, True
        inner = nn.Sequential(psa)
    else:
        inner = block.m
    order = torch.cat((torch.arange(half, 2 * half), torch.arange(half))).to(block.cv2.conv.weight.device)
    new.cv1, new.cv2, new.m, new.cv3 = second, first, inner, _conv_permute_inputs(block.cv2, order)
    return new


# Exact class -> rewrite. Exact types, so a subclass with a different forward is never rewritten silently.
REWRITES = {
    ul_block.C2f: c2f_to_c3f,
    ul_block.C3k2: c2f_to_c3f,
    ul_block.C2fCIB: c2f_to_c3f,
    ul_block.C2fPSA: c2f_to_c3f,
    ul_block.RepNCSPELAN4: c2f_to_c3f,
    ul_block.ELAN1: c2f_to_c3f,
    ul_block.C2: split_to_c3,
    ul_block.C2PSA: split_to_c3,
    ul_block.PSA: split_to_c3,
}


def rewrite_split_blocks(model: nn.Module) -> int:
    """Replaces every split block of ``model`` (in place) by its split-free equivalent.

    Returns:
        How many blocks were rewritten.

    Raises:
        NotImplementedError: ``model`` holds a split block with no rewrite (e.g. YOLOv9's ``ADown``).
    """
    unsupported = sorted({type(m).__name__ for m in model.modules() if type(m).__name__ in UNSUPPORTED_SPLIT_BLOCKS
                          and type(m).__module__.startswith("ultralytics.")})
    if unsupported:
        raise NotImplementedError(
            f"the ultralytics adapter cannot prune blocks {unsupported} yet (they split channels in a way "
            "torch-pruning cannot trace). Supported: YOLOv3u/v5u/v6/v8/v9t-m/YOLO11/YOLO26 detection models")
    return _rewrite_below(model)


def _rewrite_below(parent: nn.Module) -> int:
    """Rewrites the split blocks under ``parent``, innermost first (so nesting cannot strand one)."""
    count = 0
    for name, child in list(parent.named_children()):
        count += _rewrite_below(child)
        rewrite = REWRITES.get(type(child))
        if rewrite is None:
            continue
        new = rewrite(child)
        for attr in _LAYER_ATTRS:
            if hasattr(child, attr):
                setattr(new, attr, getattr(child, attr))
        if hasattr(new, "type"):
            new.type = f"{type(new).__module__}.{type(new).__name__}"
        setattr(parent, name, new.train(child.training))
        count += 1
    return count


def attention_layers(model: nn.Module) -> list[nn.Module]:
    """The convs of every attention block whose output channels stay whole (see module docstring)."""
    layers: list[nn.Module] = []
    for m in model.modules():
        if isinstance(m, ul_block.Attention):
            layers.extend([m.qkv, m.pe, m.proj])
    return layers


def head_output_convs(head: Detect) -> list[nn.Module]:
    """The final box and class convs of every branch of a ``Detect`` head, plus its DFL."""
    layers: list[nn.Module] = []
    for name in ("cv2", "cv3", "one2one_cv2", "one2one_cv3"):
        branches = getattr(head, name, None)
        if branches is not None:
            layers.extend(branch[-1] for branch in branches)
    if isinstance(head.dfl, ul_block.DFL):
        layers.append(head.dfl)
    return layers


def trace_one2one_attached(head: Detect) -> list:
    """Makes an end-to-end head run its inference path in every forward while pruning.

    In training mode ``Detect`` detaches the one-to-one branch's inputs (that branch must
    not train the backbone), which hides the branch from torch-pruning's tracer: the feature
    maps would lose channels its convs still expect. The inference path runs both branches
    on the attached features. Returns the hook handles; remove them after pruning. The
    hooks are module-level functions, so a model carrying them still pickles.
    """
    if getattr(head, "one2one_cv2", None) is None:
        return []
    return [head.register_forward_pre_hook(_inference_path_on), head.register_forward_hook(_inference_path_off)]


def _inference_path_on(head: nn.Module, args: tuple) -> None:
    head.training = False


def _inference_path_off(head: nn.Module, args: tuple, output: object) -> None:
    head.training = True  # the pre-hook resets it on every call; finish_pruning sets the real mode


def reset_head_caches(head: Detect) -> None:
    """Forgets the anchors/strides ``Detect`` caches per input shape, so the next forward rebuilds them."""
    head.shape = None
    head.anchors = torch.empty(0)
    head.strides = torch.empty(0)
