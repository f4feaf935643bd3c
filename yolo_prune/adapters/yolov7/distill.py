"""Knowledge distillation from the unpruned model (teacher) into the pruned one (student).

Pruning never touches the head's output convs, so student and teacher produce maps of the
same shape ``[B, na, ny, nx, 5 + nc]`` and can be compared cell by cell. The ``"output"``
form is YOLO output distillation (Mehta & Ozturk, "Object detection at 200 frames per
second", 2018), with Bernoulli KL in place of BCE so that the term is exactly zero when
the student matches the teacher. Per level, with ``T`` the temperature and
``w = sigmoid(teacher objectness)`` the teacher's confidence in a cell:

* objectness: ``T^2 * KL(sigmoid(t_obj / T) || sigmoid(s_obj / T))`` averaged over all cells;
* classes: ``T^2 * KL`` per class, averaged over classes, then averaged over cells weighted by ``w``;
* box: squared L2 between the decoded box maps (``2 * sigmoid(xy) - 0.5`` and
  ``(2 * sigmoid(wh))^2``, in cell / anchor units), averaged over cells weighted by ``w``.

Weighting by ``w`` keeps the background cells (most of the map) from dominating the class
and box terms: the student copies the teacher's boxes and classes where the teacher sees
objects. Levels are averaged. Teacher maps are detached: gradients reach only the student.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from yolo_prune.adapters.yolov7.loss import unwrap_model
from yolo_prune.registry import Registry

DistillFn = Callable[[Any, Any, "torch.Tensor | None"], "tuple[torch.Tensor, torch.Tensor]"]
DISTILL_LOSSES: "Registry[Callable[..., DistillFn]]" = Registry("distillation kind")


def build_distill_loss(student: nn.Module | None = None, teacher: nn.Module | None = None, hyp: dict | None = None,
                       *, kind: str = "output", temperature: float | None = None, weight: float = 1.0,
                       classes: bool = True) -> DistillFn:
    """A distillation term ``fn(student_outputs, teacher_outputs, imgs) -> (term * batch_size, item [1])``.

    Args:
        student: The model being trained; when given, only its lead maps (``head.nl``) are
            distilled (an ``IAuxDetect`` student's auxiliary maps are left to the detection loss).
        teacher: The teacher model (unused beyond symmetry with ``student``; its outputs are
            passed to the returned function, train-mode list or eval-mode ``(pred, maps)``).
        hyp: Hyper-parameters; ``distill_temperature`` is read when ``temperature`` is None.
        kind: A name in ``DISTILL_LOSSES`` (``"output"``).
        temperature: Softening of objectness and class probabilities (default 1.0).
        weight: Multiplies the term (the trainer may apply its own weight on top).
        classes: Distil class probabilities too. False for a teacher with other classes than
            the student: then only boxes and objectness are distilled (maps may differ in nc).

    Returns:
        The distillation function; its item is the weighted term per image, detached.
    """
    if temperature is None:
        temperature = float((hyp or {}).get("distill_temperature", 1.0))
    if temperature <= 0:
        raise ValueError(f"distillation temperature must be > 0, got {temperature}")
    return DISTILL_LOSSES.get(kind)(num_levels=_lead_levels(student), temperature=temperature, weight=weight,
                                    classes=classes)


def _lead_levels(model: nn.Module | None) -> int | None:
    if model is None:
        return None
    layers = getattr(unwrap_model(model), "model", None)
    head = layers[-1] if isinstance(layers, (nn.Sequential, nn.ModuleList)) and len(layers) else None
    return int(head.nl) if head is not None and hasattr(head, "nl") else None


@DISTILL_LOSSES.register("output")
class OutputDistillLoss:
    """YOLO output distillation (see the module docstring)."""

    def __init__(self, *, num_levels: int | None = None, temperature: float = 1.0, weight: float = 1.0,
                 classes: bool = True) -> None:
        self.num_levels, self.temperature, self.weight = num_levels, float(temperature), float(weight)
        self.classes = classes

    def __call__(self, student_outputs: Any, teacher_outputs: Any,
                 imgs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The weighted term (times the batch size) and its detached item."""
        student_maps, teacher_maps = _maps(student_outputs), _maps(teacher_outputs)
        count = min(len(student_maps), len(teacher_maps), self.num_levels or len(student_maps))
        terms = [self.level_term(s, t) for s, t in zip(student_maps[:count], teacher_maps[:count], strict=True)]
        term = self.weight * torch.stack(terms).mean()
        return term * student_maps[0].shape[0], term.detach().reshape(1)

    def level_term(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Objectness + class + box distillation of one ``[B, na, ny, nx, 5 + nc]`` map pair.

        Objectness + box only (and the class counts may differ) when ``classes`` is False.
        """
        same = student.shape == teacher.shape if self.classes else student.shape[:-1] == teacher.shape[:-1]
        if not same:
            raise ValueError(f"student map {tuple(student.shape)} and teacher map {tuple(teacher.shape)} differ; "
                             f"distil between models with the same {'classes, ' if self.classes else ''}anchors and "
                             f"input size")
        s, t, temp = student.float(), teacher.detach().float(), self.temperature
        confidence = t[..., 4].sigmoid()
        norm = confidence.sum().clamp(min=1e-6)
        obj = bernoulli_kl(t[..., 4] / temp, s[..., 4] / temp).mean() * temp**2
        box = (confidence * (_box_map(s) - _box_map(t)).pow(2).sum(-1)).sum() / norm
        if not self.classes:
            return obj + box
        cls = (confidence * bernoulli_kl(t[..., 5:] / temp, s[..., 5:] / temp).mean(-1)).sum() / norm * temp**2
        return obj + cls + box


def bernoulli_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Element-wise ``KL(Bernoulli(sigmoid(teacher)) || Bernoulli(sigmoid(student)))`` (>= 0)."""
    p = teacher_logits.sigmoid()
    log_p, log_not_p = F.logsigmoid(teacher_logits), F.logsigmoid(-teacher_logits)
    log_q, log_not_q = F.logsigmoid(student_logits), F.logsigmoid(-student_logits)
    return p * (log_p - log_q) + (1 - p) * (log_not_p - log_not_q)


def _box_map(x: torch.Tensor) -> torch.Tensor:
    """Decoded box maps (YOLOv7 parameterisation): offsets in cells, sizes in anchors."""
    return torch.cat((x[..., :2].sigmoid() * 2.0 - 0.5, (x[..., 2:4].sigmoid() * 2.0) ** 2), dim=-1)


def _maps(outputs: Any) -> list[torch.Tensor]:
    if isinstance(outputs, tuple) and len(outputs) == 2 and isinstance(outputs[1], (list, tuple)):
        outputs = outputs[1]  # eval-mode (pred, maps): the maps are the raw logits
    maps = list(outputs)
    if not maps or any(m.dim() != 5 or m.shape[-1] < 6 for m in maps):
        raise ValueError("output distillation needs YOLOv7-style maps [B, na, ny, nx, 5 + nc] from student and "
                         "teacher (train-mode list or eval-mode (pred, maps))")
    return maps
