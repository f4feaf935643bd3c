"""The synthetic shapes dataset: deterministic per seed, valid COCO, varied objects."""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from _fixtures_data import load_script

from yolo_prune.data import CocoDetectionDataset, load_coco_annotations, load_data_config
from yolo_prune.data.synthetic import CLASSES, PROFILES, make_synthetic_dataset


def _digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("a"), n_train=24, n_val=8, img_size=128, seed=5,
                                  profile="hard")


def test_same_seed_same_bytes_other_seed_differs(dataset, tmp_path):
    again = make_synthetic_dataset(tmp_path / "b", n_train=24, n_val=8, img_size=128, seed=5, profile="hard")
    other = make_synthetic_dataset(tmp_path / "c", n_train=24, n_val=8, img_size=128, seed=6, profile="hard")
    first = _digest(dataset.parent)
    assert first == _digest(again.parent)
    changed = {k for k, v in _digest(other.parent).items() if first.get(k) != v}
    assert {"annotations/instances_train.json", "images/train/000001.jpg"} <= changed


def test_valid_coco_with_non_contiguous_ids(dataset):
    cfg = load_data_config(dataset)
    assert cfg.names == [name for _, name in CLASSES] and cfg.nc == 6
    for ann_file in (cfg.train_ann, cfg.val_ann):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing to repair in a generated set
            coco = load_coco_annotations(ann_file)
        assert coco.category_ids == [1, 3, 5, 7, 9, 11]
        ids = [a["id"] for a in coco.coco.dataset["annotations"]]
        assert ids == list(range(1, len(ids) + 1))
        for a in coco.coco.dataset["annotations"]:
            img = coco.coco.imgs[a["image_id"]]
            x, y, w, h = a["bbox"]
            assert w >= 1 and h >= 1 and x + w <= img["width"] and y + h <= img["height"]
            assert a["area"] == pytest.approx(w * h, abs=0.05)
    assert len(load_coco_annotations(cfg.val_ann).images) == 8


def test_objects_vary_in_size_class_and_image_shape(dataset):
    cfg = load_data_config(dataset)
    data = json.loads(cfg.train_ann.read_text())
    side = np.sqrt([a["area"] for a in data["annotations"] if not a["iscrowd"]])
    assert side.min() < 10 and side.max() > 40  # small to large at 128 px
    assert {a["category_id"] for a in data["annotations"]} == {1, 3, 5, 7, 9, 11}
    assert len({(i["width"], i["height"]) for i in data["images"]}) > 1
    assert max(i["width"] for i in data["images"]) == 128 == max(i["height"] for i in data["images"])


def test_images_load_with_the_dataset(dataset):
    cfg = load_data_config(dataset)
    ds = CocoDetectionDataset(cfg.train_images, cfg.train_ann, img_size=128, augment=True)
    img, labels, _, _ = ds[0]
    assert img.shape == (3, 128, 128) and labels.shape[1] == 6


def test_make_synthetic_script(tmp_path):
    rc = load_script("make_synthetic").main(["--out", str(tmp_path / "s"), "--n-train", "2", "--n-val", "1",
                                             "--img", "64", "--format", "png"])
    assert rc == 0 and sorted(p.name for p in (tmp_path / "s/images/train").iterdir()) == ["000001.png", "000002.png"]
    with pytest.raises(ValueError, match="img_size >= 32"):
        make_synthetic_dataset(tmp_path / "t", n_train=1, n_val=1, img_size=8)


def _object_sides(data_yaml: Path) -> tuple[np.ndarray, dict]:
    data = json.loads(load_data_config(data_yaml).train_ann.read_text())
    sides = np.sqrt([a["area"] for a in data["annotations"] if not a["iscrowd"]])
    return sides, data


def test_profiles_change_what_is_generated(dataset, tmp_path):
    demo = make_synthetic_dataset(tmp_path / "demo", n_train=48, n_val=4, img_size=128, seed=5, profile="demo")
    demo_sides, demo_data = _object_sides(demo)
    hard_sides, hard_data = _object_sides(dataset)
    assert load_data_config(demo).nc == len(PROFILES["demo"].classes) < load_data_config(dataset).nc == 6
    # demo objects are larger: its smallest is a tenth of the short side, hard's a few pixels
    assert np.median(demo_sides) > 1.5 * np.median(hard_sides)
    assert demo_sides.min() >= 0.1 * 72 - 1 and hard_sides.min() < 8  # 72: the shortest image side (16:9)
    assert not any(a["iscrowd"] for a in demo_data["annotations"])
    ids = sorted({a["category_id"] for a in demo_data["annotations"]})
    assert ids == [cid for cid, _ in PROFILES["demo"].classes] and ids != list(range(1, len(ids) + 1))
    assert len({(i["width"], i["height"]) for i in demo_data["images"]}) > 1  # mixed image shapes


def _square_angles(data: dict) -> np.ndarray:
    """Rotation of every square's first edge, in degrees folded to [-45, 45)."""
    square = next(c["id"] for c in data["categories"] if c["name"] == "square")
    polys = [np.reshape(a["segmentation"][0], (-1, 2)) for a in data["annotations"] if a["category_id"] == square]
    angles = np.degrees([np.arctan2(*(p[1] - p[0])[::-1]) for p in polys])
    return (angles + 45) % 90 - 45


def test_profiles_limit_rotation(dataset, tmp_path):
    demo = make_synthetic_dataset(tmp_path / "demo", n_train=48, n_val=0, img_size=128, seed=5, profile="demo")
    demo_angles, hard_angles = _square_angles(_object_sides(demo)[1]), _square_angles(_object_sides(dataset)[1])
    limit = PROFILES["demo"].max_angle
    assert len(demo_angles) > 5 and limit < 45 and np.abs(demo_angles).max() <= limit + 0.5
    assert np.abs(hard_angles).max() > limit + 5  # hard: any rotation


def test_unknown_profile_names_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match="unknown synthetic profile 'dmeo'.*'demo'"):
        make_synthetic_dataset(tmp_path / "x", n_train=1, n_val=1, img_size=64, profile="dmeo")
