"""Model size and compute: parameters and MACs (torch-pruning's counter)."""
from __future__ import annotations

import torch
import torch_pruning as tp
from torch import nn


def model_stats(model: nn.Module, img_size: int | tuple[int, int]) -> dict[str, float]:
    """Parameters (millions) and GMACs (multiply-accumulates / 1e9) of one ``img_size`` image.

    Runs one forward pass in eval mode on the model's device and dtype (so BatchNorm statistics
    are untouched) and restores the model's mode.

    Args:
        model: Any ``nn.Module`` taking ``[1, 3, H, W]``.
        img_size: Input side, or ``(h, w)``.
    """
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            macs, params = tp.utils.count_ops_and_params(model, torch.zeros(1, 3, h, w, device=device, dtype=dtype))
    finally:
        model.train(was_training)
    return {"params_m": float(params) / 1e6, "gmacs": float(macs) / 1e9}
