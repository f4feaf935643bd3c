"""Reading and checking COCO-format detection annotation files.

``load_coco_annotations`` validates a json before anything trusts it: required fields, known
image and category ids, and usable boxes. Boxes partly outside their image are clipped;
degenerate ones (non-positive size, fully outside, not finite) are skipped; both are counted
in one ``DataWarning``. The cleaned annotations serve both training targets and evaluation
ground truth, so the two always agree.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
from pycocotools.coco import COCO

from yolo_prune.data.errors import DataError, warn_data

_IMAGE_FIELDS = ("id", "file_name", "width", "height")
_ANN_FIELDS = ("image_id", "category_id", "bbox")
_CATEGORY_FIELDS = ("id", "name")


@dataclass
class CocoAnnotations:
    """A validated COCO detection json.

    Attributes:
        coco: pycocotools ``COCO`` over the cleaned annotations (crowd boxes included).
        images: Image records sorted by id.
        category_ids: Contiguous class index -> COCO category id (sorted ids).
        names: Class names in contiguous order.
        labels: image id -> float32 ``[n, 5]`` (class index, x1, y1, x2, y2) in original pixels,
            crowd boxes excluded (they are not training targets).
        repairs: What was clipped or skipped, by reason.
    """

    coco: COCO
    images: list[dict]
    category_ids: list[int]
    names: list[str]
    labels: dict[int, np.ndarray]
    repairs: dict[str, int] = field(default_factory=dict)

    @property
    def class_index(self) -> dict[int, int]:
        """COCO category id -> contiguous class index."""
        return {cid: i for i, cid in enumerate(self.category_ids)}


def load_coco_annotations(ann_file: str | Path) -> CocoAnnotations:
    """Reads, validates and cleans a COCO detection json (see the module docstring).

    Raises:
        DataError: the file is missing or malformed, a required field is absent, or an
            annotation refers to an unknown image or category.
    """
    ann_file = Path(ann_file)
    raw = read_coco_json(ann_file)
    return coco_from_dict(raw, source=ann_file)


def read_coco_json(ann_file: Path) -> dict[str, Any]:
    """The parsed json, with a clear error when it is missing or not a COCO mapping."""
    if not ann_file.is_file():
        raise DataError(f"annotation file {ann_file} does not exist; check the '*_ann' path in your data yaml")
    try:
        raw = json.loads(ann_file.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise DataError(f"annotation file {ann_file} is not valid JSON ({err}); re-export or re-download it") from None
    if not isinstance(raw, dict):
        raise DataError(f"annotation file {ann_file} must hold a JSON object with 'images', 'annotations' and "
                        f"'categories', got a {type(raw).__name__}")
    return raw


def coco_from_dict(raw: dict[str, Any], *, source: str | Path = "<dict>") -> CocoAnnotations:
    """Validates and cleans an in-memory COCO dict (``raw`` is not modified)."""
    for key in ("images", "annotations", "categories"):
        if not isinstance(raw.get(key), list):
            raise DataError(f"{source}: missing or non-list '{key}'; a COCO detection json needs 'images', "
                            f"'annotations' and 'categories' lists")
    images = _check_images(raw["images"], source)
    categories = _check_categories(raw["categories"], source)
    sizes = {img["id"]: (img["width"], img["height"]) for img in images}
    repairs: dict[str, int] = {}
    anns = _clean_annotations(raw["annotations"], sizes, {c["id"] for c in categories}, source, repairs)
    if repairs:
        warn_data(f"{source}: " + ", ".join(f"{n} {reason}" for reason, n in sorted(repairs.items())) +
                  " (clipped boxes were clipped in the evaluation ground truth too)")
    dataset = {k: v for k, v in raw.items() if k not in ("images", "annotations", "categories")}
    dataset.update(images=images, annotations=anns, categories=categories)
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        coco.createIndex()
    category_ids = [c["id"] for c in categories]
    return CocoAnnotations(coco=coco, images=images, category_ids=category_ids,
                           names=[str(c["name"]) for c in categories],
                           labels=_labels_per_image(images, anns, category_ids), repairs=repairs)


def _require(record: Any, fields: tuple[str, ...], what: str, source: str | Path) -> None:
    if not isinstance(record, dict):
        raise DataError(f"{source}: every entry of '{what}' must be an object, got {record!r}")
    missing = [f for f in fields if f not in record]
    if missing:
        raise DataError(f"{source}: an entry of '{what}' lacks {missing} (entry: {_short(record)}); "
                        f"each needs {list(fields)}")


def _check_images(images: list, source: str | Path) -> list[dict]:
    seen: set[int] = set()
    out = []
    for img in images:
        _require(img, _IMAGE_FIELDS, "images", source)
        if not (_is_int(img["id"]) and _is_int(img["width"]) and _is_int(img["height"])) \
                or img["width"] <= 0 or img["height"] <= 0:
            raise DataError(f"{source}: image {_short(img)} needs an integer id and positive integer width/height")
        if img["id"] in seen:
            raise DataError(f"{source}: image id {img['id']} appears twice; image ids must be unique")
        _check_file_name(img, source)
        seen.add(img["id"])
        out.append(dict(img))
    return sorted(out, key=lambda r: r["id"])


def _check_file_name(img: dict, source: str | Path) -> None:
    """A ``file_name`` is a relative path inside the image folder: never absolute, never through ``..``."""
    name = img["file_name"]
    if not isinstance(name, str) or not name.strip():
        raise DataError(f"{source}: image id {img['id']} has file_name {name!r}; it must be the image's path "
                        f"relative to the split's image folder")
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or ".." in posix.parts or PureWindowsPath(name).drive:
        raise DataError(f"{source}: image id {img['id']} has file_name {name!r}, which leaves the image folder; "
                        f"file names must be relative paths inside it (no '..', not absolute): move the images "
                        f"under the folder and fix the json")


def _check_categories(categories: list, source: str | Path) -> list[dict]:
    if not categories:
        raise DataError(f"{source}: 'categories' is empty; list every class as {{'id': 1, 'name': 'cat'}}")
    for cat in categories:
        _require(cat, _CATEGORY_FIELDS, "categories", source)
        if not _is_int(cat["id"]):
            raise DataError(f"{source}: category id {cat['id']!r} must be an integer")
    ids = [c["id"] for c in categories]
    if len(set(ids)) != len(ids):
        raise DataError(f"{source}: duplicate category ids in {sorted(ids)}; each class needs its own id")
    return sorted((dict(c) for c in categories), key=lambda c: c["id"])


def _clean_annotations(anns: list, sizes: dict[int, tuple[int, int]], cat_ids: set[int],
                       source: str | Path, repairs: dict[str, int]) -> list[dict]:
    out = []
    for ann in anns:
        _require(ann, _ANN_FIELDS, "annotations", source)
        if ann["image_id"] not in sizes:
            raise DataError(f"{source}: annotation {_short(ann)} refers to image id {ann['image_id']}, which is "
                            f"not in 'images'; add the image or remove the annotation")
        if ann["category_id"] not in cat_ids:
            raise DataError(f"{source}: annotation {_short(ann)} has category_id {ann['category_id']}, not one of "
                            f"the categories {sorted(cat_ids)}; add it to 'categories' or fix the annotation")
        box = _clip_box(ann["bbox"], *sizes[ann["image_id"]], repairs)
        if box is None:
            continue
        area = float(ann["area"]) if _is_number(ann.get("area")) else box[2] * box[3]
        if box != list(ann["bbox"]):  # clipped: the area cannot exceed the clipped box
            area = min(area, box[2] * box[3])
        out.append(dict(ann, bbox=box, area=area, iscrowd=int(ann.get("iscrowd", 0) or 0)))
    return _renumber(out, repairs)


def _clip_box(bbox: Any, width: int, height: int, repairs: dict[str, int]) -> list[float] | None:
    """Clips [x, y, w, h] to the image; None (and a count) for a box that cannot be used."""
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        return _count(repairs, "skipped (bbox not 4 finite numbers)")
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        return _count(repairs, "skipped (non-positive width/height)")
    eps = 1e-3  # float rounding in exporters: not worth a repair
    if x >= -eps and y >= -eps and x + w <= width + eps and y + h <= height + eps:
        return list(bbox)
    x1, y1 = min(max(x, 0.0), width), min(max(y, 0.0), height)
    x2, y2 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        return _count(repairs, "skipped (outside the image)")
    _count(repairs, "clipped (partly outside the image)")
    return [x1, y1, x2 - x1, y2 - y1]


def _count(repairs: dict[str, int], reason: str) -> None:
    repairs[reason] = repairs.get(reason, 0) + 1


def _renumber(anns: list[dict], repairs: dict[str, int]) -> list[dict]:
    """Gives annotations ids 1..n when ids are missing, duplicated or < 1.

    COCOeval stores the matched ground-truth id per detection and reads 0 as "unmatched", so an
    annotation with id 0 would silently count as a miss.
    """
    ids = [a.get("id") for a in anns]
    if all(_is_int(i) and i >= 1 for i in ids) and len(set(ids)) == len(ids):
        return anns
    repairs["renumbered (ids missing, duplicated or < 1)"] = len(anns)
    return [dict(a, id=i + 1) for i, a in enumerate(anns)]


def _labels_per_image(images: list[dict], anns: list[dict], category_ids: list[int]) -> dict[int, np.ndarray]:
    index = {cid: i for i, cid in enumerate(category_ids)}
    rows: dict[int, list[list[float]]] = {img["id"]: [] for img in images}
    for ann in anns:
        if ann["iscrowd"]:
            continue  # crowd regions stay in the ground truth (COCOeval ignores matches there)
        x, y, w, h = ann["bbox"]
        rows[ann["image_id"]].append([index[ann["category_id"]], x, y, x + w, y + h])
    return {k: np.asarray(v, dtype=np.float32).reshape(-1, 5) for k, v in rows.items()}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _short(record: Any, limit: int = 120) -> str:
    text = json.dumps(record, default=str)
    return text if len(text) <= limit else text[:limit] + "...}"
