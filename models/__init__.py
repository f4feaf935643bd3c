"""YOLOv7-compatible modules at the import paths official checkpoints pickle.

``models.yolo`` (Model and heads), ``models.common`` (layers) and ``models.experimental``
(``attempt_load``) mirror the official package layout so ``torch.load`` of an official file
resolves to these classes.
"""
