"""A seeded synthetic COCO-format detection set: coloured shapes on backgrounds, in two profiles.

``demo`` (the main job's default) is a learnable detection problem: five classes (circle, square,
triangle, cross, ring) with non-contiguous category ids 1, 3, 5, 9, 11, about four objects per
image from a sixth to half of the short side, varied aspect, position and rotation (up to 30
degrees), some occlusion (shapes over shapes, lines across them), mixed image shapes, plain,
gradient or smooth blotch backgrounds with a little clutter. A yolov7-tiny trained from its cfg on
two CPU cores learns it to the validation mAP50-95 of the shipped baseline (``yolo_prune/assets``;
the learning curves that chose the profile and the recipe: ``docs/results/baseline_curves.json``).

``hard`` is a stress test: six classes (circle, square, triangle, star, cross, ring) with non-contiguous category ids
1, 3, 5, ..., 11, so the class-id mapping is exercised by default. Objects vary in colour
(some with little contrast), size (a few pixels to half the image), aspect, rotation and
overlap (larger ones are drawn first, so small ones stay visible); backgrounds mix noise,
gradients, blotches and distractor lines and arcs; about one image in ten has a crowd region
(a cluster of tiny shapes under one ``iscrowd`` box). Image sizes vary in aspect with the
long side ``img_size``. Every image comes from its own generator seeded by
``(seed, split, index)``, so a dataset is identical for the same arguments.

Layout written under ``out_dir``::

    images/train/000001.jpg ...   images/val/...
    annotations/instances_train.json   annotations/instances_val.json
    data.yaml
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from yolo_prune.io.atomic import atomic_path, atomic_write_json, atomic_write_text
from yolo_prune.registry import unknown_name_message

CLASSES: tuple[tuple[int, str], ...] = ((1, "circle"), (3, "square"), (5, "triangle"), (7, "star"),
                                        (9, "cross"), (11, "ring"))
_ASPECTS = (1.0, 1.0, 4 / 3, 3 / 4, 16 / 9, 9 / 16)  # width / height of whole images
_SPLIT_CODES = {"train": 0, "val": 1}


@dataclass(frozen=True)
class SyntheticProfile:
    """What one profile generates.

    Attributes:
        classes: ``(category_id, name)`` pairs; names must be shapes of ``CLASSES``.
        size_range: Smallest and largest object side, as fractions of the image's short side
            (sizes are log-uniform in between; the smallest is at least 5 px).
        max_objects: Most shapes planned per image (overlapping ones are dropped).
        max_iou: A shape overlapping an earlier one by more than this IoU is dropped.
        low_contrast: Probability that a shape's colour is close to the background.
        backgrounds: Background kinds drawn from (0 flat, 1 gradient, 2 smooth blotches, 3 fine blotches).
        clutter: Most distractor lines, arcs and dots drawn before the shapes.
        lines_over: Most distractor lines drawn across the shapes (occlusion).
        crowd: Probability of a crowd region (tiny shapes under one ``iscrowd`` box).
        blur: Probability of a 3x3 Gaussian blur.
        noise_sigma: Largest standard deviation of the additive pixel noise.
        max_angle: Largest rotation of a shape, in degrees either way (180: any rotation).
    """

    classes: tuple[tuple[int, str], ...]
    size_range: tuple[float, float]
    max_objects: int
    max_iou: float
    low_contrast: float
    backgrounds: tuple[int, ...]
    clutter: tuple[int, int, int]
    lines_over: int
    crowd: float
    blur: float
    noise_sigma: float
    max_angle: float = 180.0


PROFILES: dict[str, SyntheticProfile] = {
    "demo": SyntheticProfile(classes=(CLASSES[0], CLASSES[1], CLASSES[2], CLASSES[4], CLASSES[5]),
                             size_range=(0.16, 0.5), max_objects=9, max_iou=0.15, low_contrast=0.0,
                             backgrounds=(0, 1, 2), clutter=(2, 0, 4), lines_over=2, crowd=0.0, blur=0.1,
                             noise_sigma=4.0, max_angle=30.0),
    "hard": SyntheticProfile(classes=CLASSES, size_range=(0.02, 0.45), max_objects=8, max_iou=0.4,
                             low_contrast=0.25, backgrounds=(0, 1, 2, 3), clutter=(12, 4, 20), lines_over=3,
                             crowd=0.1, blur=0.3, noise_sigma=12.0),
}
DEFAULT_PROFILE = "demo"


def get_profile(name: str) -> SyntheticProfile:
    """The profile called ``name``; an unknown name is an error listing the known ones."""
    if name not in PROFILES:
        raise ValueError(unknown_name_message("synthetic profile", name, PROFILES))
    return PROFILES[name]


# -- shapes --------------------------------------------------------------------------------
def _unit_polygon(name: str) -> np.ndarray:
    """Outline of a class shape inside the unit square [-1, 1]^2."""
    if name in ("circle", "ring"):
        t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        return np.stack([np.cos(t), np.sin(t)], 1)
    if name == "square":
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float)
    if name == "triangle":
        t = np.radians([-90, 30, 150])
        return np.stack([np.cos(t), np.sin(t)], 1)
    if name == "star":
        t = np.radians(np.arange(10) * 36 - 90)
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        return np.stack([r * np.cos(t), r * np.sin(t)], 1)
    a = 0.32  # cross: arm half-width
    return np.array([[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1], [-a, a], [-1, a],
                     [-1, -a], [-a, -a]], dtype=float)


_POLYGONS = {name: _unit_polygon(name) for _, name in CLASSES}


def _place(unit: np.ndarray, centre: tuple[float, float], half: tuple[float, float], angle: float) -> np.ndarray:
    """Scales, rotates (radians) and moves a unit outline to image pixels."""
    c, s = math.cos(angle), math.sin(angle)
    pts = unit * np.asarray(half)
    return pts @ np.array([[c, s], [-s, c]]) + np.asarray(centre)


def _colour(rng: np.random.Generator, img: np.ndarray, poly: np.ndarray, low_contrast: float
            ) -> tuple[int, int, int]:
    """A random colour; with probability ``low_contrast`` close to the local background."""
    if rng.random() < low_contrast:
        x, y = np.clip(poly.mean(0).astype(int), 0, [img.shape[1] - 1, img.shape[0] - 1])
        base = img[y, x].astype(int)
        return tuple(int(v) for v in np.clip(base + rng.choice([-1, 1], 3) * rng.integers(25, 55, 3), 0, 255))
    if low_contrast == 0.0:  # far from the local background: every channel differs by >= 60 on average
        x, y = np.clip(poly.mean(0).astype(int), 0, [img.shape[1] - 1, img.shape[0] - 1])
        base = img[y, x].astype(int)
        for _ in range(8):
            colour = rng.integers(0, 256, 3)
            if np.abs(colour - base).mean() >= 60:
                break
        return tuple(int(v) for v in colour)
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _draw_shape(img: np.ndarray, rng: np.random.Generator, name: str, centre: tuple[float, float],
                half: tuple[float, float], angle: float, low_contrast: float = 0.25
                ) -> tuple[list[float], list[float]]:
    """Draws shape ``name`` and returns its tight xyxy box and outline polygon (flat)."""
    poly = _place(_POLYGONS[name], centre, half, angle)
    colour = _colour(rng, img, poly, low_contrast)
    pts = np.round(poly * 16).astype(np.int32)  # 4 fractional bits for anti-aliased edges
    if name == "ring":
        thickness = max(2, int(round(min(half) * rng.uniform(0.25, 0.45))))
        cv2.polylines(img, [pts], True, colour, thickness, cv2.LINE_AA, shift=4)
        grow = thickness / 2
        box = [poly[:, 0].min() - grow, poly[:, 1].min() - grow, poly[:, 0].max() + grow, poly[:, 1].max() + grow]
    else:
        cv2.fillPoly(img, [pts], colour, cv2.LINE_AA, shift=4)
        box = [poly[:, 0].min(), poly[:, 1].min(), poly[:, 0].max(), poly[:, 1].max()]
    return box, poly.reshape(-1).round(2).tolist()


# -- backgrounds ---------------------------------------------------------------------------
def _background(rng: np.random.Generator, h: int, w: int, kinds: tuple[int, ...]) -> np.ndarray:
    kind = kinds[int(rng.integers(0, len(kinds)))]
    if kind == 0:  # flat colour
        img = np.empty((h, w, 3), np.float32)
        img[:] = rng.integers(0, 256, 3)
    elif kind == 1:  # linear gradient between two colours
        angle = rng.uniform(0, np.pi)
        t = (np.linspace(0, 1, w, dtype=np.float32)[None, :] * math.cos(angle)
             + np.linspace(0, 1, h, dtype=np.float32)[:, None] * math.sin(angle))
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        img = c0 + t[..., None] * (c1 - c0)
    else:  # blotches: coarse noise upsampled (kind 2 smooth, kind 3 finer)
        cells = rng.integers(3, 7) if kind == 2 else rng.integers(10, 24)
        coarse = rng.integers(0, 256, (cells, cells, 3)).astype(np.float32)
        img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(img, 0, 255).astype(np.uint8)


def _clutter(img: np.ndarray, rng: np.random.Generator, most: tuple[int, int, int]) -> None:
    """Distractor lines, arcs and dots, at most ``most`` of each (arcs look like parts of rings on purpose)."""
    h, w = img.shape[:2]
    _lines(img, rng, int(rng.integers(0, most[0])))
    for _ in range(rng.integers(0, max(most[1], 1))):
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(4, max(5, w // 6))), int(rng.integers(4, max(5, h // 6))))
        start = float(rng.uniform(0, 360))
        cv2.ellipse(img, centre, axes, 0, start, start + float(rng.uniform(40, 200)),
                    tuple(int(v) for v in rng.integers(0, 256, 3)), int(rng.integers(1, 4)), cv2.LINE_AA)
    for _ in range(rng.integers(0, most[2])):
        cv2.circle(img, (int(rng.integers(0, w)), int(rng.integers(0, h))), int(rng.integers(1, 3)),
                   tuple(int(v) for v in rng.integers(0, 256, 3)), -1)


def _lines(img: np.ndarray, rng: np.random.Generator, n: int) -> None:
    h, w = img.shape[:2]
    for _ in range(n):
        p1, p2 = (int(rng.integers(0, w)), int(rng.integers(0, h))), (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.line(img, p1, p2, tuple(int(v) for v in rng.integers(0, 256, 3)), int(rng.integers(1, 4)), cv2.LINE_AA)


# -- one image -----------------------------------------------------------------------------
def _iou(box: list[float], boxes: list[list[float]]) -> float:
    if not boxes:
        return 0.0
    b = np.asarray(boxes)
    iw = np.clip(np.minimum(b[:, 2], box[2]) - np.maximum(b[:, 0], box[0]), 0, None)
    ih = np.clip(np.minimum(b[:, 3], box[3]) - np.maximum(b[:, 1], box[1]), 0, None)
    inter = iw * ih
    union = (box[2] - box[0]) * (box[3] - box[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return float((inter / union).max())


def _plan_objects(rng: np.random.Generator, h: int, w: int, max_objects: int, profile: SyntheticProfile
                  ) -> list[dict[str, Any]]:
    """Random classes, sizes (log-uniform, small to large), aspects, angles and centres."""
    short = min(h, w)
    lo, hi = max(5.0, profile.size_range[0] * short), profile.size_range[1] * short
    plans = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        size = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        stretch = math.exp(rng.uniform(-0.45, 0.45))
        half = (size * math.sqrt(stretch) / 2, size / math.sqrt(stretch) / 2)
        reach = max(half)
        centre = (rng.uniform(reach * 0.6, max(w - reach * 0.6, reach)), rng.uniform(reach * 0.6, max(h - reach * 0.6, reach)))
        plans.append({"cls": int(rng.integers(0, len(profile.classes))), "centre": centre, "half": half,
                      "angle": math.radians(rng.uniform(-profile.max_angle, profile.max_angle)), "size": size})
    return sorted(plans, key=lambda p: -p["size"])  # large first: small shapes stay on top


def _crowd(img: np.ndarray, rng: np.random.Generator, profile: SyntheticProfile) -> dict[str, Any]:
    """A cluster of tiny same-class shapes, annotated as one crowd region."""
    h, w = img.shape[:2]
    cls = int(rng.integers(0, len(profile.classes)))
    region_w, region_h = rng.uniform(0.15, 0.3) * w, rng.uniform(0.15, 0.3) * h
    x0, y0 = rng.uniform(0, w - region_w), rng.uniform(0, h - region_h)
    boxes = []
    for _ in range(int(rng.integers(8, 20))):
        half = float(rng.uniform(2, 5))
        centre = (x0 + rng.uniform(half, region_w - half), y0 + rng.uniform(half, region_h - half))
        angle = float(rng.uniform(0, 2 * np.pi))
        boxes.append(_draw_shape(img, rng, profile.classes[cls][1], centre, (half, half), angle,
                                 profile.low_contrast)[0])
    b = np.asarray(boxes)
    return {"cls": cls, "box": [b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()], "iscrowd": 1,
            "polygon": None}


def render_image(rng: np.random.Generator, img_size: int, max_objects: int | None = None,
                 profile: SyntheticProfile = PROFILES["hard"]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """One BGR image and its objects; ``max_objects`` None means the profile's.

    Objects have ``cls`` (an index into ``profile.classes``), ``box`` (xyxy), ``iscrowd`` and ``polygon``.
    """
    aspect = _ASPECTS[int(rng.integers(0, len(_ASPECTS)))]
    w, h = (img_size, round(img_size / aspect)) if aspect >= 1 else (round(img_size * aspect), img_size)
    img = _background(rng, h, w, profile.backgrounds)
    _clutter(img, rng, profile.clutter)
    objects = [_crowd(img, rng, profile)] if rng.random() < profile.crowd else []
    for plan in _plan_objects(rng, h, w, max_objects or profile.max_objects, profile):
        name = profile.classes[plan["cls"]][1]
        poly = _place(_POLYGONS[name], plan["centre"], plan["half"], plan["angle"])
        box = [poly[:, 0].min(), poly[:, 1].min(), poly[:, 0].max(), poly[:, 1].max()]
        if _iou(box, [o["box"] for o in objects]) > profile.max_iou:
            continue  # too much overlap to be fair
        box, polygon = _draw_shape(img, rng, name, plan["centre"], plan["half"], plan["angle"], profile.low_contrast)
        objects.append({"cls": plan["cls"], "box": box, "iscrowd": 0, "polygon": polygon})
    _lines(img, rng, int(rng.integers(0, profile.lines_over)))  # distractors across the shapes (occlusion)
    if rng.random() < profile.blur:
        img = cv2.GaussianBlur(img, (3, 3), 0)
    sigma = rng.uniform(0, profile.noise_sigma)
    img = np.clip(img + rng.normal(0, sigma, img.shape).astype(np.float32), 0, 255).astype(np.uint8)
    return img, objects


# -- dataset -------------------------------------------------------------------------------
def _annotation(obj: dict[str, Any], ann_id: int, image_id: int, w: int, h: int,
                classes: tuple[tuple[int, str], ...]) -> dict[str, Any] | None:
    x1, y1 = max(0.0, float(obj["box"][0])), max(0.0, float(obj["box"][1]))
    x2, y2 = min(float(w), float(obj["box"][2])), min(float(h), float(obj["box"][3]))
    if x2 - x1 < 1 or y2 - y1 < 1:
        return None
    x1, y1, x2, y2 = round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2)
    bbox = [x1, y1, round(x2 - x1, 2), round(y2 - y1, 2)]
    seg = obj["polygon"] or [x1, y1, x2, y1, x2, y2, x1, y2]
    return {"id": ann_id, "image_id": image_id, "category_id": classes[obj["cls"]][0], "bbox": bbox,
            "area": round(bbox[2] * bbox[3], 2), "iscrowd": obj["iscrowd"], "segmentation": [seg]}


def write_split(out_dir: Path, split: str, n: int, img_size: int, seed: int, *, image_format: str = "jpg",
                max_objects: int | None = None, profile: SyntheticProfile = PROFILES["hard"]) -> Path:
    """Renders ``n`` images of one split and writes them with their COCO json; returns the json path."""
    image_dir = out_dir / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    params = [int(cv2.IMWRITE_JPEG_QUALITY), 90] if image_format == "jpg" else []
    for index in range(n):
        rng = np.random.default_rng([seed, _SPLIT_CODES[split], index])
        img, objects = render_image(rng, img_size, max_objects, profile)
        image_id, (h, w) = index + 1, img.shape[:2]
        name = f"{image_id:06d}.{image_format}"
        with atomic_path(image_dir / name) as tmp:
            ok, data = cv2.imencode(f".{image_format}", img, params)
            if not ok:
                raise RuntimeError(f"OpenCV could not encode {name}; try image_format='png'")
            tmp.write_bytes(data.tobytes())
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
        for obj in objects:
            ann = _annotation(obj, len(annotations) + 1, image_id, w, h, profile.classes)
            if ann is not None:
                annotations.append(ann)
    categories = [{"id": cid, "name": name, "supercategory": "shape"} for cid, name in profile.classes]
    info = {"description": f"yolo-prune synthetic shapes ({split})", "seed": seed, "img_size": img_size}
    ann_path = out_dir / "annotations" / f"instances_{split}.json"
    atomic_write_json({"info": info, "images": images, "annotations": annotations, "categories": categories},
                      ann_path)
    return ann_path


def make_synthetic_dataset(out_dir: str | Path, *, n_train: int = 512, n_val: int = 128, img_size: int = 320,
                           seed: int = 0, image_format: str = "jpg", max_objects: int | None = None,
                           profile: str = DEFAULT_PROFILE) -> Path:
    """Writes the synthetic shapes dataset (train and val) and returns its ``data.yaml``.

    Args:
        out_dir: Output folder (created; existing files of the same names are replaced).
        n_train: Training images.
        n_val: Validation images.
        img_size: Long side of every image.
        seed: Same seed, same arguments -> byte-identical dataset.
        image_format: ``jpg`` (quality 90) or ``png`` (lossless).
        max_objects: Most shapes per image (at least 1 is planned; overlapping ones are dropped);
            None: the profile's.
        profile: ``demo`` (learnable, the main job's default) or ``hard`` (a stress test); see ``PROFILES``.
    """
    spec = get_profile(profile)
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    if n_train < 0 or n_val < 0 or img_size < 32:
        raise ValueError(f"need n_train, n_val >= 0 and img_size >= 32; got {n_train}, {n_val}, {img_size}")
    out_dir = Path(out_dir)
    for split, n in (("train", n_train), ("val", n_val)):
        write_split(out_dir, split, n, img_size, seed, image_format=image_format, max_objects=max_objects,
                    profile=spec)
    config = {"path": ".", "train": "images/train", "train_ann": "annotations/instances_train.json",
              "val": "images/val", "val_ann": "annotations/instances_val.json", "names": [n for _, n in spec.classes]}
    header = (f"# yolo-prune synthetic shapes, profile {profile}: seed {seed}, img_size {img_size}, "
              f"{n_train} train / {n_val} val\n")
    return atomic_write_text(header + yaml.safe_dump(config, sort_keys=False), out_dir / "data.yaml")
