"""Training hyper-parameters (YOLOv7's ``hyp.*.yaml``): loading and validation.

A hyp file is a flat mapping of numbers (and the optimizer name). Every key of the official YOLOv7 files is
required except ``loss_ota``; a few optional keys have defaults here, the one place they
live. An unknown key (usually a typo) is an error naming the closest known key.
"""
from __future__ import annotations

import math
from pathlib import Path

import yaml

from yolo_prune.registry import unknown_name_message

OPTIMIZER_KEYS = ("lr0", "lrf", "momentum", "weight_decay", "warmup_epochs", "warmup_momentum", "warmup_bias_lr")
LOSS_KEYS = ("box", "cls", "cls_pw", "obj", "obj_pw", "anchor_t", "fl_gamma")
AUGMENT_KEYS = ("hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear", "perspective", "flipud",
                "fliplr", "mosaic", "mixup", "copy_paste", "paste_in")
# iou_t is read by no YOLOv7 loss (kept for file compatibility with the official hyps).
REQUIRED_KEYS = OPTIMIZER_KEYS + LOSS_KEYS + ("iou_t",) + AUGMENT_KEYS

OPTIONAL_DEFAULTS = {
    "loss_ota": 1,  # 1: OTA assignment (official default when the key is absent), 0: plain
    "label_smoothing": 0.0,  # class label smoothing epsilon (train.py --label-smoothing)
    "optimizer": "SGD",  # SGD (YOLOv7) or AdamW; the one key that is a name, not a number
}
OPTIMIZER_NAMES = ("SGD", "AdamW")
# Optional keys without a default: only their readers look for them.
OPTIONAL_NO_DEFAULT = (
    "anchors",  # YOLOv5-style anchors per level (unused: anchors come from the model cfg)
    "dfl",  # Ultralytics' distribution-focal-loss gain (selects Ultralytics-style gains)
    "distill_temperature",  # knowledge distillation temperature (yolo_prune.adapters.yolov7.distill)
)
KNOWN_KEYS = REQUIRED_KEYS + tuple(OPTIONAL_DEFAULTS) + OPTIONAL_NO_DEFAULT


class HypError(ValueError):
    """A hyper-parameter file or dict that cannot be used; the message says how to fix it."""


def missing_keys_message(missing: list[str], needed_by: str) -> str:
    """'<needed_by> needs hyp keys a, b; add them (see configs/hyp/hyp.scratch.p5.yaml)'."""
    return (f"{needed_by} needs the hyper-parameter(s) {', '.join(missing)}; add them to the hyp "
            f"(see configs/hyp/hyp.scratch.p5.yaml for the official values)")


def load_hyp(path: str | Path) -> dict:
    """Reads and validates a hyp yaml; returns a new dict with the optional defaults filled in.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        HypError: not a mapping, an unknown key, a missing required key or a non-numeric value.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"hyp file {path} does not exist; pass one of configs/hyp/*.yaml or your own copy")
    with path.open() as f:
        data = yaml.safe_load(f)
    return validate_hyp(data, source=str(path))


def validate_hyp(hyp: object, *, source: str = "hyp") -> dict:
    """Validates a hyp mapping (see ``load_hyp``); ``source`` names it in error messages."""
    if not isinstance(hyp, dict):
        raise HypError(f"{source} must be a mapping of name: number, got {type(hyp).__name__}")
    for key in hyp:
        if key not in KNOWN_KEYS:
            raise HypError(f"{source}: {unknown_name_message('hyper-parameter', str(key), KNOWN_KEYS)}")
    missing = [k for k in REQUIRED_KEYS if k not in hyp]
    if missing:
        raise HypError(f"{source}: {missing_keys_message(missing, 'training')}")
    if hyp.get("optimizer", "SGD") not in OPTIMIZER_NAMES:
        raise HypError(f"{source}: optimizer must be one of {', '.join(OPTIMIZER_NAMES)}, got {hyp['optimizer']!r}")
    for key, value in hyp.items():
        if key == "optimizer":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise HypError(f"{source}: {key} must be a finite number, got {value!r} ({type(value).__name__})")
    if hyp.get("loss_ota", 1) not in (0, 1):
        raise HypError(f"{source}: loss_ota must be 0 (plain assignment) or 1 (OTA), got {hyp['loss_ota']!r}")
    return {**hyp, **{k: v for k, v in OPTIONAL_DEFAULTS.items() if k not in hyp}}
