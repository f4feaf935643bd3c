"""Convert YOLO-txt datasets (``images/`` + ``labels/*.txt``, as Ultralytics uses) to COCO json.

Each label line is ``class cx cy w h`` normalised to the image, or ``class x1 y1 x2 y2 ...``
(a normalised polygon, whose enclosing box is used). The label of ``.../images/a/b.jpg`` is
``.../labels/a/b.txt``; an image without a label file has no objects (it is kept). Class ``i``
becomes COCO category id ``i + 1``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import yaml
from PIL import Image

from yolo_prune.data.errors import DataError, warn_data
from yolo_prune.io.atomic import atomic_write_json, atomic_write_text

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_EXIF_ORIENTATION = 0x0112


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) as OpenCV will decode it (EXIF rotation applied), read from the header."""
    try:
        with Image.open(path) as img:
            w, h = img.size
            rotated = img.getexif().get(_EXIF_ORIENTATION) in (5, 6, 7, 8)
    except (OSError, SyntaxError) as err:
        raise DataError(f"cannot read image {path} ({err}); replace or remove it") from None
    return (h, w) if rotated else (w, h)


def label_path(image: Path, images_root: Path, labels_root: Path | None) -> Path:
    """The label file of ``image``: under ``labels_root`` if given, else ``/images/`` -> ``/labels/``."""
    if labels_root is not None:
        return (labels_root / image.relative_to(images_root)).with_suffix(".txt")
    parts = list(image.parts)
    if "images" not in parts:
        raise DataError(f"cannot find the label file of {image}: its path has no 'images' folder; pass "
                        f"--labels DIR")
    k = len(parts) - 1 - parts[::-1].index("images")
    parts[k] = "labels"
    return Path(*parts).with_suffix(".txt")


def parse_label_file(path: Path, nc: int, width: int, height: int, counts: dict[str, int]) -> list[list[float]]:
    """Rows ``[class, x, y, w, h]`` in pixels (COCO bbox), clipped to the image."""
    rows = []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        values = line.split()
        if not values:
            continue
        try:
            cls, coords = int(float(values[0])), [float(v) for v in values[1:]]
        except ValueError:
            raise DataError(f"{path}:{line_no}: not numbers: {line!r}") from None
        if not 0 <= cls < nc:
            raise DataError(f"{path}:{line_no}: class {cls} is outside 0..{nc - 1}; fix the label or the names list")
        box = _normalised_box(coords, path, line_no)
        x1, y1, x2, y2 = (min(max(v, 0.0), 1.0) for v in box)
        if (x1, y1, x2, y2) != box:
            counts["clipped"] = counts.get("clipped", 0) + 1
        if x2 <= x1 or y2 <= y1:
            counts["skipped (empty box)"] = counts.get("skipped (empty box)", 0) + 1
            continue
        rows.append([cls, x1 * width, y1 * height, (x2 - x1) * width, (y2 - y1) * height])
    return rows


def _normalised_box(coords: list[float], path: Path, line_no: int) -> tuple[float, float, float, float]:
    if len(coords) == 4:
        cx, cy, w, h = coords
        return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    if len(coords) >= 6 and len(coords) % 2 == 0:  # polygon x1 y1 x2 y2 ...
        xs, ys = coords[0::2], coords[1::2]
        return min(xs), min(ys), max(xs), max(ys)
    raise DataError(f"{path}:{line_no}: expected 'class cx cy w h' or 'class x1 y1 x2 y2 x3 y3 ...', "
                    f"got {len(coords) + 1} values")


def yolo_txt_to_coco(images: Sequence[Path], names: Sequence[str], out_json: str | Path, *,
                     images_root: Path | None = None, labels_root: Path | None = None) -> tuple[Path, Path]:
    """Writes a COCO json for ``images`` (with their YOLO-txt labels).

    Args:
        images: Image files.
        names: Class names (class ``i`` -> category id ``i + 1``).
        out_json: Output json path.
        images_root: Folder that ``file_name`` entries are relative to (default: the images'
            deepest common folder).
        labels_root: Folder mirroring ``images_root`` with ``.txt`` labels; by default each
            label sits where ``/images/`` is replaced by ``/labels/``.

    Returns:
        ``(out_json, images_root)``: ``file_name`` entries are relative to ``images_root``.
    """
    if not images:
        raise DataError("no images to convert; check the images folder / list")
    images = sorted(Path(p).resolve() for p in images)
    root = images_root.resolve() if images_root else Path(os.path.commonpath([p.parent for p in images]))
    records, anns, counts = [], [], {}
    for image_id, path in enumerate(images, 1):
        w, h = image_size(path)
        records.append({"id": image_id, "file_name": path.relative_to(root).as_posix(), "width": w, "height": h})
        lbl = label_path(path, root, labels_root)
        if not lbl.is_file():
            counts["images without a label file (kept, no objects)"] = counts.get(
                "images without a label file (kept, no objects)", 0) + 1
            continue
        for cls, x, y, bw, bh in parse_label_file(lbl, len(names), w, h, counts):
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": int(cls) + 1,
                         "bbox": [round(v, 3) for v in (x, y, bw, bh)], "area": round(bw * bh, 3), "iscrowd": 0})
    if counts:
        warn_data(f"{out_json}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    categories = [{"id": i + 1, "name": str(n)} for i, n in enumerate(names)]
    atomic_write_json({"images": records, "annotations": anns, "categories": categories}, out_json)
    return Path(out_json), root


def list_images(source: Path) -> list[Path]:
    """Images of a folder (recursive) or of a ``.txt`` list (one path per line, relative to it)."""
    if source.is_dir():
        return [p for p in sorted(source.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
    if source.suffix == ".txt" and source.is_file():
        lines = [line.strip() for line in source.read_text().splitlines() if line.strip()]
        return [(source.parent / line) if not Path(line).is_absolute() else Path(line) for line in lines]
    raise DataError(f"{source} is neither an image folder nor a .txt image list")


def convert_yolo_data_yaml(data_yaml: str | Path, out_dir: str | Path) -> Path:
    """Converts every split of an Ultralytics data yaml; writes COCO jsons and our ``data.yaml``."""
    data_yaml, out_dir = Path(data_yaml), Path(out_dir)
    raw = yaml.safe_load(data_yaml.read_text())
    names = raw.get("names")
    names = [names[i] for i in range(len(names))] if isinstance(names, dict) else names
    if not names:
        raise DataError(f"{data_yaml} has no 'names'; add the class names list")
    root = _ultralytics_root(data_yaml, raw.get("path"))
    config: dict[str, Any] = {}
    for split in ("train", "val", "test"):
        if not raw.get(split):
            continue
        sources = raw[split] if isinstance(raw[split], list) else [raw[split]]
        images = [p for s in sources for p in list_images(_under(root, s))]
        ann, images_root = yolo_txt_to_coco(images, names, out_dir / "annotations" / f"instances_{split}.json")
        config[split] = os.path.relpath(images_root, out_dir)
        config[f"{split}_ann"] = os.path.relpath(ann, out_dir)
    config["names"] = [str(n) for n in names]
    return atomic_write_text(f"# converted from {data_yaml}\n" + yaml.safe_dump(config, sort_keys=False),
                             out_dir / "data.yaml")


def _ultralytics_root(data_yaml: Path, path: str | None) -> Path:
    if path is None:
        return data_yaml.parent
    for candidate in (data_yaml.parent / path, Path(path)):
        if candidate.is_dir():
            return candidate.resolve()
    raise DataError(f"{data_yaml}: dataset root 'path: {path}' not found next to the yaml or in the current folder")


def _under(root: Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else root / p
