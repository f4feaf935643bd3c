"""``YOLO`` for pruned Ultralytics models: the same class, but ``train`` keeps the pruned model.

Plain ``ultralytics.YOLO("pruned.pt").train(...)`` rebuilds the network from the model's
yaml and copies over only the tensors whose shapes still fit: the pruned widths are lost
(for example 0.80 M parameters become 3.16 M, "Transferred 65/355 items"). An Ultralytics
yaml cannot carry pruned widths: each block derives its hidden widths from one width
argument, and the ``Detect`` head derives its own from its inputs. This subclass trains with
``PrunedDetectionTrainer``, which takes the loaded model as it is (and rebuilds only the
class outputs when the data has other classes); everything else is Ultralytics' own::

    from yolo_prune.ultralytics import YOLO

    model = YOLO("yolov8n-pruned.pt")
    model.train(data="my_data.yaml", epochs=30, imgsz=640)   # trains the pruned network
    model.val(data="my_data.yaml")

``train(rename_classes=True)`` trains a model whose classes number as many as the data's
but carry other names under the data's names (refused otherwise).
"""
from __future__ import annotations

import functools
from typing import Any

from ultralytics import YOLO as _UltralyticsYOLO

from yolo_prune.adapters.ultralytics.trainer import PrunedDetectionTrainer

__all__ = ["YOLO", "PrunedDetectionTrainer"]


class YOLO(_UltralyticsYOLO):
    """``ultralytics.YOLO`` whose detection training keeps the model's (pruned) architecture."""

    @property
    def task_map(self) -> dict[str, dict[str, Any]]:
        """Ultralytics' task map with ``PrunedDetectionTrainer`` as the detection trainer."""
        tasks = dict(super().task_map)
        tasks["detect"] = {**tasks["detect"], "trainer": PrunedDetectionTrainer}
        return tasks

    def train(self, trainer: Any = None, *, rename_classes: bool = False, **kwargs: Any) -> Any:
        """Ultralytics' ``train`` with ``PrunedDetectionTrainer`` unless another ``trainer`` is given.

        Args:
            trainer: A trainer class (default: ``PrunedDetectionTrainer`` for detection models).
            rename_classes: Equal class counts under other names: train under the data's names.
            **kwargs: Ultralytics training arguments (``data``, ``epochs``, ``imgsz``, ...).
        """
        if trainer is None and self.task == "detect":
            trainer = functools.partial(PrunedDetectionTrainer, rename_classes=rename_classes)
        elif rename_classes:
            raise ValueError("rename_classes works with the default trainer (PrunedDetectionTrainer); drop it or "
                             "the trainer argument")
        return super().train(trainer=trainer, **kwargs)
