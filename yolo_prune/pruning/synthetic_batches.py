"""Stand-in batches for gradient-based criteria when the user gives no data.

Taylor importance needs loss gradients. Without a dataset we feed random images with a
few random boxes per image: the gradients then reflect how each channel moves the loss
on generic inputs. Real data ranks better; ``scripts/prune.py --data`` provides it.
"""
from __future__ import annotations

from typing import Iterator

import torch

from yolo_prune.paths import HYP_DIR


def random_batches(img_size: int, nc: int, *, n_batches: int = 2, batch_size: int = 2,
                   boxes_per_image: int = 4, seed: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yields ``(images [B, 3, S, S] in 0..1, targets [M, 6])`` from a seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(n_batches):
        imgs = torch.rand(batch_size, 3, img_size, img_size, generator=gen)
        m = batch_size * boxes_per_image
        batch_idx = torch.arange(batch_size).repeat_interleave(boxes_per_image).float()
        cls = torch.randint(0, nc, (m,), generator=gen).float()
        wh = 0.05 + 0.4 * torch.rand(m, 2, generator=gen)
        xy = wh / 2 + (1 - wh) * torch.rand(m, 2, generator=gen)
        yield imgs, torch.cat([batch_idx[:, None], cls[:, None], xy, wh], dim=1)


def default_loss_hyp() -> dict:
    """The loss gains of the default fine-tuning hyper-parameters."""
    from yolo_prune.engine.hyp import load_hyp

    return load_hyp(HYP_DIR / "hyp.finetune.yaml")
