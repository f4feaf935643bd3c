"""YOLOv7's shape-ratio assignment: which (anchor, grid cell) pairs may predict a target.

A target is a candidate for anchor ``a`` of level ``i`` when neither side of the box is
more than ``anchor_t`` times larger or smaller than the anchor's side. Besides the cell
holding the box centre, the cells next to the centre also predict it: with ``bias=0.5``
the nearer horizontal and nearer vertical neighbour (3 cells per anchor: YOLOv5/YOLOv7's
``build_targets`` / ``find_3_positive``), with ``bias=1.0`` all four neighbours (5 cells:
``find_5_positive``, the auxiliary head's wider radius). Neighbours are only used when the
centre is more than one cell away from the border. The predicted centre offset
``2 * sigmoid(t) - 0.5`` spans (-0.5, 1.5), so a neighbouring cell can reach the centre.

The plain loss uses every candidate as a positive; the OTA loss (``ota.py``) keeps a
dynamic subset of them.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

# Cell offsets in units of ``bias``: centre, then left, up, right, down neighbours.
_NEIGHBOUR_OFFSETS = ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))


@dataclass
class Assignment:
    """Positive (or candidate) predictions, one row each, over all levels of one head.

    Attributes:
        level: Detection level of the prediction ``[K]``.
        image: Image index in the batch ``[K]``.
        anchor: Anchor index within the level ``[K]``.
        gj: Grid row ``[K]``.
        gi: Grid column ``[K]``.
        target: Row of the ``[M, 6]`` targets the prediction is trained towards ``[K]``.
    """

    level: torch.Tensor
    image: torch.Tensor
    anchor: torch.Tensor
    gj: torch.Tensor
    gi: torch.Tensor
    target: torch.Tensor

    def __len__(self) -> int:
        return int(self.level.numel())

    def select(self, index: torch.Tensor) -> "Assignment":
        """Rows picked by a boolean mask or an index tensor."""
        return Assignment(*(getattr(self, f.name)[index] for f in fields(self)))

    def at_level(self, level: int) -> "Assignment":
        """The entries of detection level ``level``."""
        return self.select(self.level == level)

    @staticmethod
    def cat(parts: "list[Assignment]") -> "Assignment":
        """The entries of ``parts`` one after the other."""
        return Assignment(*(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(Assignment)))


def grid_sizes(outputs: list[torch.Tensor]) -> list[tuple[int, int]]:
    """``(ny, nx)`` of each ``[B, na, ny, nx, no]`` output map."""
    return [(int(p.shape[2]), int(p.shape[3])) for p in outputs]


def find_candidates(sizes: list[tuple[int, int]], targets: torch.Tensor, anchors: torch.Tensor,
                    anchor_t: float, bias: float = 0.5) -> Assignment:
    """Shape-ratio candidates of every level (see the module docstring).

    Args:
        sizes: ``(ny, nx)`` of each level.
        targets: ``[M, 6]`` = (image, class, cx, cy, w, h), box normalised to 0..1.
        anchors: ``[nl, na, 2]`` anchor sizes in stride units (the head's ``anchors`` buffer).
        anchor_t: Largest allowed side ratio between a box and an anchor (hyp ``anchor_t``).
        bias: 0.5 for centre + 2 nearest neighbours, 1.0 for centre + 4 neighbours.

    Returns:
        The candidates of all levels, level by level.
    """
    parts = [_level_candidates(i, ny, nx, targets, anchors[i].to(targets.device, torch.float32), anchor_t, bias)
             for i, (ny, nx) in enumerate(sizes)]
    return Assignment.cat(parts)


def _level_candidates(level: int, ny: int, nx: int, targets: torch.Tensor, anchors: torch.Tensor,
                      anchor_t: float, bias: float) -> Assignment:
    device = targets.device
    boxes = targets[:, 2:6].float() * torch.tensor([nx, ny, nx, ny], device=device, dtype=torch.float32)
    ratio = boxes[None, :, 2:4] / anchors[:, None]  # [na, M, 2]
    fits = torch.max(ratio, 1.0 / ratio).amax(dim=2) < anchor_t
    anchor_idx, target_idx = fits.nonzero(as_tuple=True)
    centre = boxes[target_idx, :2]
    from_far_side = torch.tensor([nx, ny], device=device, dtype=torch.float32) - centre
    near_low = (centre % 1.0 < bias) & (centre > 1.0)  # left / upper neighbour
    near_high = (from_far_side % 1.0 < bias) & (from_far_side > 1.0)  # right / lower neighbour
    use = torch.stack((torch.ones_like(near_low[:, 0]), near_low[:, 0], near_low[:, 1],
                       near_high[:, 0], near_high[:, 1]))  # [5, K]
    offset_idx, row = use.nonzero(as_tuple=True)
    offsets = torch.tensor(_NEIGHBOUR_OFFSETS, device=device) * bias
    cell = (centre[row] - offsets[offset_idx]).long()
    gi, gj = cell[:, 0].clamp(0, nx - 1), cell[:, 1].clamp(0, ny - 1)
    target_idx = target_idx[row]
    return Assignment(level=torch.full_like(gi, level), image=targets[target_idx, 0].long(),
                      anchor=anchor_idx[row], gj=gj, gi=gi, target=target_idx)


def gather_predictions(outputs: list[torch.Tensor], assigned: Assignment) -> torch.Tensor:
    """The raw ``[K, no]`` prediction rows of ``assigned`` (in its row order)."""
    no = outputs[0].shape[-1]
    rows = outputs[0].new_zeros((len(assigned), no))
    for i, p in enumerate(outputs):
        mask = assigned.level == i
        if mask.any():
            rows[mask] = p[assigned.image[mask], assigned.anchor[mask], assigned.gj[mask], assigned.gi[mask]]
    return rows


def decode_boxes(raw_xywh: torch.Tensor, assigned: Assignment, anchors: torch.Tensor) -> torch.Tensor:
    """Raw box logits ``[K, 4]`` -> centre-format boxes in grid units relative to each row's cell.

    ``xy = 2 * sigmoid(t_xy) - 0.5`` (cell offset), ``wh = (2 * sigmoid(t_wh))^2 * anchor``.
    """
    xy = raw_xywh[:, :2].sigmoid() * 2.0 - 0.5
    wh = (raw_xywh[:, 2:4].sigmoid() * 2.0) ** 2 * anchors[assigned.level, assigned.anchor].to(raw_xywh)
    return torch.cat((xy, wh), dim=1)


def target_boxes(targets: torch.Tensor, assigned: Assignment, sizes: list[tuple[int, int]]) -> torch.Tensor:
    """Each row's target box ``[K, 4]`` in grid units, centre relative to the row's cell."""
    nx_ny = torch.tensor([(nx, ny) for ny, nx in sizes], device=targets.device, dtype=torch.float32)
    scale = nx_ny[assigned.level].repeat(1, 2)
    boxes = targets[assigned.target, 2:6].float() * scale
    cell = torch.stack((assigned.gi, assigned.gj), dim=1).float()
    return torch.cat((boxes[:, :2] - cell, boxes[:, 2:]), dim=1)
