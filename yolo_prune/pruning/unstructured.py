"""Fine-grained (unstructured) magnitude pruning: the contrast to channel pruning.

Zeroing the smallest weights keeps every tensor's shape, so a dense kernel does exactly the
same work: the file compresses better, but latency on dense hardware (CPU, GPU without sparse
kernels) does not move. Channel pruning removes whole filters and does get faster. This mode
exists to show that difference with numbers (``sparsity_contrast``), using
``torch.nn.utils.prune`` with the masks made permanent before anything is saved.
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn.utils.prune as torch_prune
import torch_pruning as tp
from torch import nn

from yolo_prune.pruning.settings import PRUNE_DEFAULTS
from yolo_prune.settings import IMG_SIZE

if TYPE_CHECKING:  # annotations only: generic code takes an adapter, it never imports the families
    from yolo_prune.adapters.base import DetectorAdapter

SCOPES = ("layer", "global")
PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)
LatencyFn = Callable[[nn.Module], float]


def prunable_layers(model: nn.Module, adapter: DetectorAdapter) -> list[tuple[str, nn.Module]]:
    """Convs and linears whose weights may be zeroed: all but the adapter's ignored (head) layers."""
    ignored = {id(m) for layer in adapter.ignored_layers(model) for m in layer.modules()}
    return [(n, m) for n, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES) and id(m) not in ignored]


def unstructured_prune(model: nn.Module, adapter: DetectorAdapter, sparsity: float, *, scope: str = PRUNE_DEFAULTS.scope,
                       img_size: int = IMG_SIZE, latency_fn: LatencyFn | None = None) -> dict[str, Any]:
    """Zeroes the smallest-magnitude weights of ``model`` in place and reports what that changed.

    Args:
        model: A float32 model; shapes are kept, the masks are made permanent (``prune.remove``).
        adapter: Its adapter (ignored layers keep all their weights).
        sparsity: Fraction of the prunable weights to zero, in [0, 1).
        scope: ``layer`` (every layer reaches ``sparsity``) or ``global`` (one magnitude threshold
            over all prunable layers; layers end up unevenly sparse).
        img_size: Input size for MAC counting.
        latency_fn: Optional ``model -> latency_ms`` measured before and after (e.g. fused CPU latency).

    Returns:
        A JSON-ready report: requested and achieved sparsity, per-layer sparsity, dense GMACs and
        parameter counts (unchanged), non-zero parameters, and latency before / after.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}; e.g. 0.5 zeroes half the weights")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    layers = prunable_layers(model, adapter)
    if not layers:
        raise ValueError("no prunable conv / linear layer outside the adapter's ignored layers")
    latency_before = None if latency_fn is None else float(latency_fn(model))
    if sparsity > 0:
        _apply_masks(layers, sparsity, scope)
    device = next(model.parameters()).device
    macs, params = tp.utils.count_ops_and_params(model.eval(), torch.zeros(1, 3, img_size, img_size, device=device))
    report = sparsity_report(model, adapter)
    report.update({
        "mode": "unstructured", "sparsity_requested": sparsity, "scope": scope, "gmacs": macs / 1e9,
        "params_m": params / 1e6, "latency_ms_before": latency_before,
        "latency_ms_after": None if latency_fn is None else float(latency_fn(model)),
        "note": "zeroed weights keep every tensor dense: GMACs and latency on dense hardware do not fall; "
                "channel pruning (yolo-prune prune) removes whole filters and does speed up"})
    return report


def _apply_masks(layers: list[tuple[str, nn.Module]], sparsity: float, scope: str) -> None:
    """L1-magnitude masks, then ``prune.remove`` so the zeros live in plain ``weight`` tensors."""
    if scope == "global":
        torch_prune.global_unstructured([(m, "weight") for _, m in layers], pruning_method=torch_prune.L1Unstructured,
                                        amount=sparsity)
    else:
        for _, module in layers:
            torch_prune.l1_unstructured(module, "weight", amount=sparsity)
    for _, module in layers:
        torch_prune.remove(module, "weight")


def sparsity_report(model: nn.Module, adapter: DetectorAdapter) -> dict[str, Any]:
    """Per-layer and overall fraction of exactly-zero weights in the prunable layers."""
    rows = []
    zeros_total = numel_total = 0
    for name, module in prunable_layers(model, adapter):
        weight = module.weight.detach()
        zeros, numel = int((weight == 0).sum()), weight.numel()
        rows.append({"name": name, "shape": list(weight.shape), "numel": numel, "zeros": zeros,
                     "sparsity": zeros / numel})
        zeros_total += zeros
        numel_total += numel
    all_params = sum(p.numel() for p in model.parameters())
    nonzero = sum(int((p.detach() != 0).sum()) for p in model.parameters())
    return {"sparsity_achieved": zeros_total / max(numel_total, 1), "prunable_params_m": numel_total / 1e6,
            "nonzero_params_m": nonzero / 1e6, "sparsity_all_params": 1 - nonzero / max(all_params, 1),
            "layers": rows}


def channel_ratio_for_sparsity(sparsity: float) -> float:
    """The channel ratio removing about the same fraction of conv weights.

    A conv loses both input and output channels, so its weights shrink by ``(1 - ratio) ** 2``.
    """
    return 1.0 - (1.0 - sparsity) ** 0.5


def sparsity_contrast(model: nn.Module, adapter: DetectorAdapter, sparsity: float, *, img_size: int = IMG_SIZE,
                      latency_fn: LatencyFn, prune_settings: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Dense vs unstructured vs channel-pruned copies of ``model`` at about the same weight reduction.

    Returns:
        Rows ``{name, params_m, nonzero_params_m, gmacs, latency_ms}`` for the three models: the
        unstructured row keeps the dense GMACs and latency, the channel row drops both.
    """
    from yolo_prune.pruning.pruner import prune_model

    dense = copy.deepcopy(model).eval()
    sparse = copy.deepcopy(model).eval()
    report = unstructured_prune(sparse, adapter, sparsity, img_size=img_size, latency_fn=latency_fn)
    ratio = channel_ratio_for_sparsity(sparsity)
    result = prune_model(copy.deepcopy(model).eval(), adapter, img_size=img_size, pruning_ratio=ratio,
                         **dict(prune_settings or {}))
    rows = [{"name": "dense", "params_m": report["params_m"], "nonzero_params_m": _nonzero_m(dense),
             "gmacs": report["gmacs"], "latency_ms": report["latency_ms_before"]},
            {"name": f"unstructured {sparsity:.0%}", "params_m": report["params_m"],
             "nonzero_params_m": report["nonzero_params_m"], "gmacs": report["gmacs"],
             "latency_ms": report["latency_ms_after"]},
            {"name": f"channel ratio {ratio:.2f}", "params_m": result.params_after / 1e6,
             "nonzero_params_m": _nonzero_m(result.model), "gmacs": result.gmacs_after,
             "latency_ms": float(latency_fn(result.model.eval()))}]
    return rows


def _nonzero_m(model: nn.Module) -> float:
    return sum(int((p.detach() != 0).sum()) for p in model.parameters()) / 1e6
