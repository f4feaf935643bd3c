"""``data.yaml``: where a COCO-format dataset's images and annotation files are.

Example (every path is relative to the yaml's folder, or to ``path`` when given)::

    path: .                                   # optional dataset root
    train: images/train                       # image folder
    train_ann: annotations/instances_train.json
    val: images/val
    val_ann: annotations/instances_val.json
    names: [circle, square, triangle]         # optional: read from the json when left out

An Ultralytics YOLO-txt data yaml has no ``*_ann`` keys; convert it first with
``scripts/yolo_txt_to_coco.py --data their.yaml``.
"""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from yolo_prune.data.errors import DataError

_KNOWN_KEYS = ("path", "train", "train_ann", "val", "val_ann", "test", "test_ann", "names", "nc")


@dataclass(frozen=True)
class DataConfig:
    """Resolved dataset locations and class names (``names[i]`` is contiguous class ``i``)."""

    train_images: Path | None
    train_ann: Path | None
    val_images: Path | None
    val_ann: Path | None
    names: list[str]
    test_images: Path | None = None
    test_ann: Path | None = None
    source: Path | None = None

    @property
    def nc(self) -> int:
        """Number of classes."""
        return len(self.names)

    def split(self, name: str) -> tuple[Path, Path]:
        """``(images_dir, ann_file)`` of split ``name`` (``train``, ``val`` or ``test``)."""
        if name not in ("train", "val", "test"):
            raise DataError(f"unknown split {name!r}; use train, val or test")
        images, ann = getattr(self, f"{name}_images"), getattr(self, f"{name}_ann")
        if images is None or ann is None:
            raise DataError(f"{self.source} has no {name!r} split; add '{name}:' (image folder) and "
                            f"'{name}_ann:' (COCO json) to it")
        return images, ann


def load_data_config(path: str | Path) -> DataConfig:
    """Reads a ``data.yaml``; paths are resolved relative to its folder (or its ``path`` key).

    Raises:
        DataError: unreadable yaml, an unknown key, a split without its annotation file, or
            class names that disagree with ``nc``.
    """
    path = Path(path)
    raw = _read_yaml(path)
    _check_keys(raw, path)
    root = path.parent / str(raw.get("path") or ".")
    resolved = {key: _resolve(root, raw.get(key)) for key in
                ("train", "train_ann", "val", "val_ann", "test", "test_ann")}
    for split in ("train", "val", "test"):
        if resolved[split] is not None and resolved[f"{split}_ann"] is None:
            raise DataError(f"{path}: split {split!r} has images but no '{split}_ann' (COCO json). If this is "
                            f"an Ultralytics YOLO-txt dataset, convert it: python scripts/yolo_txt_to_coco.py "
                            f"--data {path}")
    if resolved["train_ann"] is None and resolved["val_ann"] is None:
        raise DataError(f"{path} names no dataset split; add 'val:' and 'val_ann:' (and 'train:'/'train_ann:')")
    names = _names(raw, path, resolved["val_ann"] or resolved["train_ann"])
    return DataConfig(train_images=resolved["train"], train_ann=resolved["train_ann"],
                      val_images=resolved["val"], val_ann=resolved["val_ann"], names=names,
                      test_images=resolved["test"], test_ann=resolved["test_ann"], source=path)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"data config {path} does not exist; pass the data.yaml of your dataset "
                        f"(scripts/make_synthetic.py writes one)")
    try:
        raw = yaml.safe_load(path.read_text())
    except UnicodeDecodeError:
        raise DataError(f"data config {path} is not a text file; pass the data.yaml of your dataset") from None
    except yaml.YAMLError as err:  # safe_load refuses python tags: a data yaml cannot construct objects
        raise DataError(f"data config {path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise DataError(f"data config {path} must be a mapping (train:, val:, names: ...), got {type(raw).__name__}")
    return raw


def _check_keys(raw: dict[str, Any], path: Path) -> None:
    for key in raw:
        if key not in _KNOWN_KEYS:
            close = difflib.get_close_matches(str(key), _KNOWN_KEYS, n=1, cutoff=0.5)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise DataError(f"{path}: unknown key {key!r}.{hint} Known keys: {', '.join(_KNOWN_KEYS)}")


def _resolve(root: Path, value: Any) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise DataError(f"expected a path, got {value!r}; one folder or json file per split")
    p = Path(value).expanduser()
    return (p if p.is_absolute() else root / p).resolve()


def _names(raw: dict[str, Any], path: Path, ann_file: Path | None) -> list[str]:
    names = raw.get("names")
    if isinstance(names, dict):  # Ultralytics style {0: person, 1: bicycle}
        if sorted(names) != list(range(len(names))):
            raise DataError(f"{path}: names keys must be 0..{len(names) - 1}, got {sorted(names)}")
        names = [names[i] for i in range(len(names))]
    if names is None:
        names = names_from_coco_json(ann_file) if ann_file is not None else []
    if not isinstance(names, list) or not all(isinstance(n, (str, int)) for n in names):
        raise DataError(f"{path}: names must be a list of class names, got {names!r}")
    nc = raw.get("nc")
    if nc is not None and int(nc) != len(names):
        raise DataError(f"{path}: nc is {nc} but names lists {len(names)} classes; make them agree")
    return [str(n) for n in names]


def names_from_coco_json(ann_file: Path) -> list[str]:
    """Class names of a COCO json, ordered by category id (the contiguous class order)."""
    if not Path(ann_file).is_file():
        raise DataError(f"annotation file {ann_file} does not exist; check 'path' and the '*_ann' entries of the "
                        f"data yaml")
    try:
        cats = json.loads(Path(ann_file).read_text()).get("categories", [])
        return [str(c["name"]) for c in sorted(cats, key=lambda c: c["id"])]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise DataError(f"cannot read class names from {ann_file}: {err}; add 'names:' to the data yaml "
                        f"or fix the json") from None
