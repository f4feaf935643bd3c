"""Building blocks of YOLOv7, at the import path official checkpoints pickle (``models.common``).

Each class keeps the constructor signature, submodule names and instance attributes of its
official counterpart, so that ``torch.load`` of an official file yields working modules and a
file we save loads in the official code. Bodies are written from the published architecture.

Fusion follows the official conventions: a fused ``Conv`` has no ``bn`` and its instance
``forward`` is its bound ``fuseforward``; a re-parameterised ``RepConv`` holds ``rbr_reparam``.
Fusion reads channel counts from tensors, never from bookkeeping attributes, because channel
pruning changes the tensors but not those attributes (see ``refresh_bookkeeping``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Concat", "Conv", "DownC", "ImplicitA", "ImplicitM", "MP", "ReOrg", "RepConv", "SP", "SPPCSPC",
    "Shortcut", "autopad", "fuse_conv_and_bn",
]


def autopad(k: int | list[int], p: int | list[int] | None = None) -> int | list[int]:
    """'Same' padding for an odd kernel ``k`` unless ``p`` is given."""
    if p is None:
        p = k // 2 if isinstance(k, int) else [x // 2 for x in k]
    return p


@torch.no_grad()
def fuse_conv_and_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Returns one biased ``Conv2d`` equal to ``bn(conv(x))`` in eval mode."""
    fused = nn.Conv2d(
        conv.weight.shape[1] * conv.groups, conv.weight.shape[0], kernel_size=conv.kernel_size,
        stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
    conv_bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.copy_((conv_bias - bn.running_mean) * scale + bn.bias)
    fused.requires_grad_(False)  # as official: fused layers are for inference
    return fused


def _activation(act: bool | nn.Module) -> nn.Module:
    """``True`` -> SiLU (the YOLOv7 default), a module -> itself, anything else -> Identity."""
    if act is True:
        return nn.SiLU()
    return act if isinstance(act, nn.Module) else nn.Identity()


class MP(nn.Module):
    """Max-pool downsampling by ``k`` (kernel = stride = k)."""

    def __init__(self, k: int = 2) -> None:
        super().__init__()
        self.m = nn.MaxPool2d(kernel_size=k, stride=k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Max-pools with stride equal to the kernel."""
        return self.m(x)


class SP(nn.Module):
    """Size-preserving max-pool (the SPP branches of yolov7-tiny)."""

    def __init__(self, k: int = 3, s: int = 1) -> None:
        super().__init__()
        self.m = nn.MaxPool2d(kernel_size=k, stride=s, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Max-pools with ``padding = k // 2`` (shape kept at stride 1)."""
        return self.m(x)


class ReOrg(nn.Module):
    """Space-to-depth: ``[B, C, H, W] -> [B, 4C, H/2, W/2]`` (stem of the P6 models)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Stacks the four pixel phases on the channel axis."""
        return torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1)


class Concat(nn.Module):
    """Concatenates a list of tensors along dimension ``d``."""

    def __init__(self, dimension: int = 1) -> None:
        super().__init__()
        self.d = dimension

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        """Concatenates the inputs along ``dimension``."""
        return torch.cat(x, self.d)


class Shortcut(nn.Module):
    """Adds two tensors (residual merge in yolov7-e6e). ``d`` is kept for compatibility."""

    def __init__(self, dimension: int = 0) -> None:
        super().__init__()
        self.d = dimension

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        """Adds the two inputs."""
        return x[0] + x[1]


class Conv(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> activation."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1,
                 act: bool | nn.Module = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p), groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = _activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Conv, BatchNorm, activation (``fuseforward`` once fused)."""
        if not hasattr(self, "bn"):  # fused, but pickled without the instance ``forward``
            return self.fuseforward(x)
        return self.act(self.bn(self.conv(x)))

    def fuseforward(self, x: torch.Tensor) -> torch.Tensor:
        """Conv and activation: the forward of a fused layer (BatchNorm folded into the conv)."""
        return self.act(self.conv(x))

    def fuse(self) -> None:
        """Folds ``bn`` into ``conv`` in place (the official ``Model.fuse`` step for Conv)."""
        if hasattr(self, "bn"):
            self.conv = fuse_conv_and_bn(self.conv, self.bn)
            delattr(self, "bn")
            self.forward = self.fuseforward  # official convention; pickles as getattr(self, 'fuseforward')


class DownC(nn.Module):
    """Downsampling by ``k``: concat of a strided 3x3 conv branch and a max-pool + 1x1 branch."""

    def __init__(self, c1: int, c2: int, n: int = 1, k: int = 2) -> None:
        super().__init__()
        c_ = int(c1)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_, c2 // 2, 3, k)
        self.cv3 = Conv(c1, c2 // 2, 1, 1)
        self.mp = nn.MaxPool2d(kernel_size=k, stride=k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenates the strided conv branch and the max-pool branch."""
        return torch.cat((self.cv2(self.cv1(x)), self.cv3(self.mp(x))), dim=1)


class SPPCSPC(nn.Module):
    """CSP spatial pyramid pooling: max-pools of sizes ``k`` on one branch, a 1x1 on the other."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, g: int = 1, e: float = 0.5,
                 k: tuple[int, ...] = (5, 9, 13)) -> None:
        super().__init__()
        c_ = int(2 * c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(c_, c_, 3, 1)
        self.cv4 = Conv(c_, c_, 1, 1)
        self.m = nn.ModuleList([nn.MaxPool2d(kernel_size=x, stride=1, padding=x // 2) for x in k])
        self.cv5 = Conv(4 * c_, c_, 1, 1)
        self.cv6 = Conv(c_, c_, 3, 1)
        self.cv7 = Conv(2 * c_, c2, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The CSP spatial-pyramid-pooling block."""
        x1 = self.cv4(self.cv3(self.cv1(x)))
        y1 = self.cv6(self.cv5(torch.cat([x1] + [m(x1) for m in self.m], 1)))
        return self.cv7(torch.cat((y1, self.cv2(x)), dim=1))


class ImplicitA(nn.Module):
    """Learned additive per-channel offset (YOLOR implicit knowledge), ``implicit`` [1, C, 1, 1]."""

    def __init__(self, channel: int, mean: float = 0.0, std: float = 0.02) -> None:
        super().__init__()
        self.channel = channel
        self.mean = mean
        self.std = std
        self.implicit = nn.Parameter(torch.zeros(1, channel, 1, 1))
        nn.init.normal_(self.implicit, mean=self.mean, std=self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Adds the implicit knowledge to ``x``."""
        return self.implicit + x


class ImplicitM(nn.Module):
    """Learned multiplicative per-channel scale (YOLOR implicit knowledge), ``implicit`` [1, C, 1, 1]."""

    def __init__(self, channel: int, mean: float = 1.0, std: float = 0.02) -> None:
        super().__init__()
        self.channel = channel
        self.mean = mean
        self.std = std
        self.implicit = nn.Parameter(torch.ones(1, channel, 1, 1))
        nn.init.normal_(self.implicit, mean=self.mean, std=self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Multiplies ``x`` by the implicit knowledge."""
        return self.implicit * x


class RepConv(nn.Module):
    """RepVGG block: 3x3 conv-bn + 1x1 conv-bn (+ identity bn) summed, then the activation.

    ``fuse_repvgg_block`` re-parameterises the branches into one biased 3x3 ``rbr_reparam``.
    """

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1, p: int | None = None, g: int = 1,
                 act: bool | nn.Module = True, deploy: bool = False) -> None:
        super().__init__()
        if k != 3 or autopad(k, p) != 1:
            raise ValueError(f"RepConv needs a 3x3 kernel with padding 1, got k={k}, p={p}")
        self.deploy = deploy
        self.groups = g
        self.in_channels = c1
        self.out_channels = c2
        self.act = _activation(act)
        if deploy:
            self.rbr_reparam = nn.Conv2d(c1, c2, k, s, 1, groups=g, bias=True)
            return
        self.rbr_identity = nn.BatchNorm2d(num_features=c1) if c2 == c1 and s == 1 else None
        self.rbr_dense = nn.Sequential(nn.Conv2d(c1, c2, k, s, 1, groups=g, bias=False), nn.BatchNorm2d(c2))
        self.rbr_1x1 = nn.Sequential(nn.Conv2d(c1, c2, 1, s, 0, groups=g, bias=False), nn.BatchNorm2d(c2))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """The re-parameterised conv once fused, else the sum of the 3x3, 1x1 and identity branches."""
        if hasattr(self, "rbr_reparam"):
            return self.act(self.rbr_reparam(inputs))
        out = self.rbr_dense(inputs) + self.rbr_1x1(inputs)
        if self.rbr_identity is not None:
            out = out + self.rbr_identity(inputs)
        return self.act(out)

    def get_equivalent_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The single 3x3 kernel and bias equal to the three branches in eval mode."""
        dense = fuse_conv_and_bn(self.rbr_dense[0], self.rbr_dense[1])
        one = fuse_conv_and_bn(self.rbr_1x1[0], self.rbr_1x1[1])
        kernel = dense.weight + F.pad(one.weight, [1, 1, 1, 1])
        bias = dense.bias + one.bias
        if self.rbr_identity is not None:
            identity = fuse_conv_and_bn(self._identity_conv(), self.rbr_identity)
            kernel = kernel + F.pad(identity.weight, [1, 1, 1, 1])
            bias = bias + identity.bias
        return kernel, bias

    def _identity_conv(self) -> nn.Conv2d:
        """A 1x1 grouped conv computing the identity, sized from the actual tensors."""
        conv = self.rbr_dense[0]
        channels = self.rbr_identity.num_features
        in_per_group = conv.weight.shape[1]
        identity = nn.Conv2d(channels, channels, 1, groups=conv.groups, bias=False)
        identity = identity.to(device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            identity.weight.zero_()
            for c in range(channels):
                identity.weight[c, c % in_per_group, 0, 0] = 1.0
        return identity

    @torch.no_grad()
    def fuse_repvgg_block(self) -> None:
        """Re-parameterises the branches into ``rbr_reparam`` in place (official method name)."""
        if self.deploy or hasattr(self, "rbr_reparam"):
            return
        kernel, bias = self.get_equivalent_kernel_bias()
        conv = self.rbr_dense[0]
        reparam = nn.Conv2d(conv.weight.shape[1] * conv.groups, conv.weight.shape[0], 3, conv.stride, 1,
                            dilation=conv.dilation, groups=conv.groups, bias=True)
        reparam = reparam.to(device=kernel.device, dtype=kernel.dtype)
        reparam.weight.copy_(kernel)
        reparam.bias.copy_(bias)
        self.rbr_reparam = reparam
        self.deploy = True
        # Official fused blocks keep the branch names set to None.
        self.rbr_identity = None
        self.rbr_1x1 = None
        self.rbr_dense = None
