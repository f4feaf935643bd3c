"""Least-squares compensation: a conv that loses input channels is refitted to the inputs it keeps.

When a group loses channels, every conv that read them (its consumers) loses inputs. Before the
channels go, each consumer's lost inputs are fitted as an affine function of the inputs it keeps,
by ridge least squares over every pixel of a few calibration images:

    x_removed ~= M @ x_kept + c

and folded into the consumer: ``W[:, kept] += W[:, removed] @ M`` at every kernel tap, and
``W[:, removed] @ c`` (summed over the taps) into the consumer's bias, or out of the running mean of
the BatchNorm right after it (YOLO's Conv blocks have no conv bias). The consumer then computes
nearly what it computed before; in a one-step prune the criterion still chooses which channels go
(a later step of an iterative prune ranks the refitted weights). At zero-padded border taps the
constant is added although the original conv read zeros there: an error of ``W[:, removed, tap] @ c``
on border pixels, which small maps have many of (16 of 25 on a 5 x 5 stride-32 map). This is the
reconstruction step of channel-pruning methods such as ThiNet (Luo et al., 2017) and channel
pruning by LASSO (He et al., 2017), by closed form and without their channel selection.

The statistics come from the unpruned model in one pass (``InputGrams``), so a consumer whose
producer lost channels earlier in the same step is fitted to what the unpruned producer gave.
Each consumer keeps the map from its current input channels to the original ones, so a conv
pruned by several groups (after a concatenation) or several steps is fitted on the right rows.
Grouped (depthwise) convs are left as they are.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
import torch_pruning as tp
from torch import nn

# Ridge strength relative to the kept inputs' mean energy. Chosen on the demo baseline (uniform 0.5,
# l2, 128 train images at 160 px; mAP50-95 before fine-tuning, 0.000 uncompensated): 0.001 -> 0.366,
# 0.003 -> 0.364, 0.01 -> 0.360, 0.03 -> 0.347, 0.1 -> 0.308, 0.3 -> 0.233, 1 -> 0.076. 0.01 is the
# plateau's cautious end: fewer or more collinear calibration pixels need more of it.
DEFAULT_RIDGE = 0.01


class InputGrams:
    """Second moments of every (ungrouped) conv's input, with a constant row for the offset.

    ``grams[conv]`` is ``[C + 1, C + 1]`` in float64 (C input channels, the last row the constant 1),
    summed over every pixel of the calibration images. Memory is ``8 (C + 1)^2`` bytes a conv, and
    while a batch passes a conv, about four times its float32 input (two float64 copies).
    """

    def __init__(self, model: nn.Module, images: Iterable[torch.Tensor]) -> None:
        self.grams: dict[nn.Conv2d, torch.Tensor] = {}
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups == 1]
        hooks = [conv.register_forward_pre_hook(self._accumulate) for conv in convs]
        device = next(model.parameters()).device
        try:
            with torch.no_grad():
                for imgs in images:
                    model(imgs.to(device))
        finally:
            for hook in hooks:
                hook.remove()
        if not self.grams:
            raise ValueError("compensation needs at least one calibration image; got none")

    def _accumulate(self, conv: nn.Conv2d, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0].detach().double()
        x = x.transpose(0, 1).reshape(x.shape[1], -1)  # [C, pixels]
        x = torch.cat([x, x.new_ones(1, x.shape[1])])
        gram = x @ x.T
        self.grams[conv] = self.grams[conv] + gram if conv in self.grams else gram


class Compensator:
    """Refits the consumers of each pruning group before the group is pruned (see the module docstring)."""

    def __init__(self, model: nn.Module, images: Iterable[torch.Tensor], *, ridge: float = DEFAULT_RIDGE) -> None:
        if not ridge > 0:
            raise ValueError(f"compensation ridge must be > 0, got {ridge}")
        self.inputs, self.ridge = InputGrams(model, images), float(ridge)
        # the original input channel of each current one, per conv (pruning shrinks and shifts them)
        self.alive = {conv: list(range(g.shape[0] - 1)) for conv, g in self.inputs.grams.items()}
        self.refitted = 0  # consumer updates so far (one per conv and group)

    def __call__(self, group: Any, graph: tp.DependencyGraph) -> None:
        """Compensates every conv whose input channels ``group`` removes; call before ``group.prune()``."""
        removed: dict[nn.Conv2d, set[int]] = {}
        for dep, idxs in group:
            conv = dep.target.module
            if conv in self.inputs.grams and graph.is_in_channel_pruning_fn(dep.handler):
                removed.setdefault(conv, set()).update(int(i) for i in idxs)
        for conv, idxs in removed.items():
            self._refit(conv, sorted(idxs), graph)

    def _refit(self, conv: nn.Conv2d, idxs: list[int], graph: tp.DependencyGraph) -> None:
        alive = self.alive[conv]
        gone = set(idxs)
        kept_now = [i for i in range(len(alive)) if i not in gone]
        if not kept_now:
            return
        gram = self.inputs.grams[conv]
        kept = [alive[i] for i in kept_now] + [gram.shape[0] - 1]  # the constant row last
        lost = [alive[i] for i in idxs]
        g_kk, g_lk = gram[kept][:, kept], gram[lost][:, kept]
        ridge = self.ridge * torch.diagonal(g_kk).mean()
        eye = torch.eye(len(kept), dtype=gram.dtype, device=gram.device)
        fit = torch.linalg.solve(g_kk + ridge * eye, g_lk.T).T  # [lost, kept + 1]
        weight = conv.weight.data.double()
        w_lost = weight[:, idxs]
        weight[:, kept_now] += torch.einsum("olhw,lk->okhw", w_lost, fit[:, :-1])
        conv.weight.data.copy_(weight.to(conv.weight.dtype))
        offset = torch.einsum("olhw,l->o", w_lost, fit[:, -1])  # what the constant adds to each output
        self._add_offset(conv, offset, graph)
        self.alive[conv] = [alive[i] for i in kept_now]
        self.refitted += 1

    @staticmethod
    def _add_offset(conv: nn.Conv2d, offset: torch.Tensor, graph: tp.DependencyGraph) -> None:
        if conv.bias is not None:
            conv.bias.data += offset.to(conv.bias.dtype)
            return
        node = graph.module2node.get(conv)
        after = [n.module for n in node.outputs] if node is not None else []
        if len(after) == 1 and isinstance(after[0], nn.modules.batchnorm._BatchNorm) and after[0].track_running_stats:
            bn = after[0]
            bn.running_mean.data -= offset.to(bn.running_mean.dtype)  # BN subtracts its mean: z - (mean - offset)
        # else: no place for a constant without adding a parameter; the linear part still holds
