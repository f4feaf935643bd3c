"""COCO dataset, letterbox and its inverse, augmentations, data.yaml, YOLO-txt conversion, bad input."""
from __future__ import annotations

import json
import random
import warnings

import cv2
import numpy as np
import pytest
import torch
from _fixtures_data import BOX_CLASSES, load_script, write_box_dataset, write_coco

from yolo_prune.data import (
    CocoDetectionDataset,
    DataError,
    DataWarning,
    build_dataloader,
    letterbox,
    load_coco_annotations,
    load_data_config,
    scale_boxes,
)
from yolo_prune.data import augment as aug
from yolo_prune.data.transforms import cxcywh_to_xyxy, map_boxes, xyxy_to_cxcywh

NO_AUG = {k: 0.0 for k in aug.AUGMENT_DEFAULTS}


@pytest.fixture()
def box_dataset(tmp_path):
    return write_box_dataset(tmp_path)


# -- letterbox and its inverse --------------------------------------------------------------
@pytest.mark.parametrize("shape", [(480, 640), (640, 480), (333, 517), (100, 100), (37, 250)])
@pytest.mark.parametrize("target", [64, (96, 160), 640])
def test_letterbox_inverse_round_trip(shape, target):
    img = np.zeros((*shape, 3), np.uint8)
    out, ratio, pad = letterbox(img, target, scaleup=True)
    th, tw = (target, target) if isinstance(target, int) else target
    assert out.shape[:2] == (th, tw)
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 1, (20, 2)) * [shape[1], shape[0]]
    boxes = np.concatenate([xy, xy + rng.uniform(1, 30, (20, 2))], 1).clip(0, [shape[1], shape[0]] * 2)
    mapped = map_boxes(boxes, ratio, pad)
    assert (mapped >= 0).all() and (mapped[:, [0, 2]] <= tw).all() and (mapped[:, [1, 3]] <= th).all()
    np.testing.assert_allclose(scale_boxes(mapped, out.shape[:2], shape, (ratio, pad)), boxes, atol=1e-3)
    torch.testing.assert_close(scale_boxes(torch.tensor(mapped), out.shape[:2], shape, (ratio, pad)),
                               torch.tensor(boxes, dtype=torch.float32), atol=1e-3, rtol=0)


def test_letterbox_places_pixels_where_map_boxes_says():
    img = np.zeros((120, 200, 3), np.uint8)
    img[40:80, 100:160] = 255  # box x 100..160, y 40..80
    out, ratio, pad = letterbox(img, 100)
    ys, xs = np.nonzero(out[:, :, 0] > 127)
    expected = map_boxes(np.array([[100, 40, 160, 80]], np.float32), ratio, pad)[0]
    np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], expected, atol=1)
    assert (out[0, 0] == 114).all()  # grey border (top band: 120x200 -> 60x100 inside 100x100)


def test_letterbox_without_scaleup_and_default_inverse():
    img = np.zeros((30, 40, 3), np.uint8)
    out, ratio, _ = letterbox(img, 64, scaleup=False)
    assert ratio == (1.0, 1.0) and out.shape[:2] == (64, 64)
    boxes = np.array([[0, 0, 40, 30]], np.float32)  # the whole image, centred in the 64x64 canvas
    back = scale_boxes(map_boxes(boxes, (1.6, 1.6), (0, 8)), (64, 64), (30, 40))  # as letterbox(scaleup=True)
    np.testing.assert_allclose(back, boxes, atol=1e-4)


def test_box_conversions_are_inverse():
    boxes = torch.tensor([[1.0, 2.0, 11.0, 8.0]])
    assert xyxy_to_cxcywh(boxes).tolist() == [[6.0, 5.0, 10.0, 6.0]]
    torch.testing.assert_close(cxcywh_to_xyxy(xyxy_to_cxcywh(boxes)), boxes)


# -- the dataset -----------------------------------------------------------------------------
def test_item_layout_and_category_mapping(box_dataset):
    images, ann = box_dataset
    ds = CocoDetectionDataset(images, ann, img_size=64)
    assert ds.category_ids == [2, 5, 9] and ds.names == ["c2", "c5", "c9"] and len(ds) == 5
    img, labels, image_id, shapes = ds[0]
    assert img.dtype == torch.uint8 and img.shape == (3, 64, 64) and image_id == 10
    assert labels.shape == (1, 6) and labels[0, 1] == 0  # crowd box of image 10 is not a target
    (h0, w0), (ratio, pad) = shapes
    assert (h0, w0) == (96, 128) and ratio == (0.5, 0.5) and pad == (0.0, 8.0)
    # the label, mapped back, is the json box
    xyxy = cxcywh_to_xyxy(labels[:, 2:] * 64)
    back = scale_boxes(xyxy, (64, 64), (h0, w0), (ratio, pad))
    x, y, w, h = json.loads(ann.read_text())["annotations"][0]["bbox"]
    torch.testing.assert_close(back[0], torch.tensor([x, y, x + w, y + h], dtype=torch.float32))
    # image content: the box's pixels carry its class colour, in RGB
    r, g, b = img[:, int(labels[0, 3] * 64), int(labels[0, 2] * 64)].tolist()
    assert (b, g, r) == BOX_CLASSES[0][1]


def test_crowd_stays_in_ground_truth_and_empty_images_are_kept(box_dataset):
    images, ann = box_dataset
    ds = CocoDetectionDataset(images, ann, img_size=64)
    crowd = [a for a in ds.coco.dataset["annotations"] if a["iscrowd"]]
    assert len(crowd) == 1
    empty = ds.image_ids.index(50)
    assert ds[empty][1].shape == (0, 6)


def test_rect_batches_and_collate(box_dataset):
    images, ann = box_dataset
    ds = CocoDetectionDataset(images, ann, img_size=64, rect=True, batch_size=2)
    assert (ds.batch_shapes % 32 == 0).all()
    aspect = [img["height"] / img["width"] for img in ds.images]
    assert aspect == sorted(aspect)
    loader = build_dataloader(ds, 2, shuffle=False, workers=0)
    seen = 0
    for k, (imgs, targets, ids, shapes) in enumerate(loader):
        assert imgs.dtype == torch.uint8 and tuple(imgs.shape[2:]) == tuple(ds.batch_shapes[k])
        assert targets.shape[1] == 6 and set(targets[:, 0].long().tolist()) <= set(range(len(ids)))
        assert len(shapes) == len(ids) == imgs.shape[0]
        seen += len(ids)
    assert seen == len(ds)


def test_shuffle_is_seeded(box_dataset):
    images, ann = box_dataset
    ds = CocoDetectionDataset(images, ann, img_size=64)
    order = [[ids for _, _, ids, _ in build_dataloader(ds, 1, shuffle=True, workers=0, seed=s)] for s in (1, 1, 2)]
    assert order[0] == order[1] and order[0] != order[2]


def test_augment_flip_only_mirrors_labels(box_dataset):
    images, ann = box_dataset
    plain = CocoDetectionDataset(images, ann, img_size=64)
    flipped = CocoDetectionDataset(images, ann, img_size=64, augment=True, hyp={**NO_AUG, "fliplr": 1.0})
    assert not flipped.mosaic  # mosaic probability 0
    img0, lb0, _, _ = plain[2]
    img1, lb1, _, shapes = flipped[2]
    assert shapes is None  # augmented: no inverse mapping
    torch.testing.assert_close(lb1[:, 2], 1 - lb0[:, 2])
    torch.testing.assert_close(lb1[:, 3:], lb0[:, 3:])
    assert torch.equal(img1, img0.flip(-1))


def test_identity_affine_changes_nothing():
    img = np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    labels = np.array([[1, 10, 12, 40, 50]], np.float32)
    out, out_labels = aug.random_perspective(img, labels, NO_AUG)
    assert np.array_equal(out, img)
    np.testing.assert_allclose(out_labels, labels, atol=1e-4)
    assert aug.augment_hsv(img, 0, 0, 0) is img


def test_affine_moves_boxes_with_pixels():
    random.seed(0)
    img = np.zeros((128, 128, 3), np.uint8)
    img[30:70, 40:90] = 255
    labels = np.array([[0, 40, 30, 90, 70]], np.float32)
    hyp = {**NO_AUG, "degrees": 0.0, "translate": 0.2, "scale": 0.4}
    out, out_labels = aug.random_perspective(img, labels, hyp)
    ys, xs = np.nonzero(out[:, :, 0] > 127)
    np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], out_labels[0, 1:], atol=1.5)


@pytest.mark.parametrize("mixup", [0.0, 1.0])
def test_mosaic_items_and_switching_it_off(box_dataset, mixup):
    images, ann = box_dataset
    hyp = {**aug.AUGMENT_DEFAULTS, "mosaic": 1.0, "mixup": mixup}
    ds = CocoDetectionDataset(images, ann, img_size=64, augment=True, hyp=hyp)
    assert ds.mosaic
    random.seed(1)
    for i in range(len(ds)):
        img, labels, _, shapes = ds[i]
        assert img.shape == (3, 64, 64) and shapes is None
        assert ((labels[:, 2:] >= 0) & (labels[:, 2:] <= 1)).all()
    ds.mosaic = False  # the last epochs (close_mosaic)
    img, labels, _, _ = ds[1]
    assert img.shape == (3, 64, 64)


def test_mosaic_labels_sit_on_their_objects(box_dataset):
    images, ann = box_dataset
    ds = CocoDetectionDataset(images, ann, img_size=64, augment=True, hyp={**NO_AUG, "mosaic": 1.0})
    random.seed(3)
    checked = 0
    for _ in range(4):
        for i in range(len(ds)):
            img, labels, _, _ = ds[i]
            for _, cls, cx, cy, _, _ in labels.tolist():
                r, g, b = img[:, int(cy * 64), int(cx * 64)].tolist()
                assert (b, g, r) == BOX_CLASSES[int(cls)][1]
                checked += 1
    assert checked > 10


def test_unsupported_hyp_key_warns(box_dataset):
    images, ann = box_dataset
    with pytest.warns(DataWarning, match="paste_in"):
        CocoDetectionDataset(images, ann, img_size=64, augment=True, hyp={"paste_in": 0.15})


# -- data.yaml --------------------------------------------------------------------------------
def test_load_data_config_resolves_relative_paths(tmp_path, box_dataset):
    cfg_file = tmp_path / "cfg" / "data.yaml"
    cfg_file.parent.mkdir()
    cfg_file.write_text("path: ..\nval: images\nval_ann: instances.json\n")
    cfg = load_data_config(cfg_file)
    assert cfg.val_images == (tmp_path / "images").resolve() and cfg.val_ann.is_file()
    assert cfg.names == ["c2", "c5", "c9"] and cfg.train_ann is None  # names read from the json
    assert cfg.split("val") == (cfg.val_images, cfg.val_ann)
    with pytest.raises(DataError, match="no 'train' split"):
        cfg.split("train")


def test_load_data_config_errors(tmp_path):
    bad = tmp_path / "data.yaml"
    bad.write_text("val: images\nval_ann: a.json\nnmaes: [a]\n")
    with pytest.raises(DataError, match="Did you mean 'names'"):
        load_data_config(bad)
    bad.write_text("train: images/train\nval: images/val\nnames: {0: a, 1: b}\n")  # ultralytics yaml
    with pytest.raises(DataError, match="yolo_txt_to_coco"):
        load_data_config(bad)
    bad.write_text("val: v\nval_ann: a.json\nnames: [a, b]\nnc: 3\n")
    with pytest.raises(DataError, match="nc is 3"):
        load_data_config(bad)
    with pytest.raises(DataError, match="does not exist"):
        load_data_config(tmp_path / "missing.yaml")


# -- bad input --------------------------------------------------------------------------------
def _image(i: int, w: int = 100, h: int = 80) -> dict:
    return {"id": i, "file_name": f"{i}.png", "width": w, "height": h}


def _ann(i: int, bbox: list, cat: int = 2, image_id: int = 1) -> dict:
    return {"id": i, "image_id": image_id, "category_id": cat, "bbox": bbox, "iscrowd": 0}


def test_boxes_are_clipped_or_skipped_with_counts(tmp_path):
    anns = [_ann(1, [10, 10, 20, 20]), _ann(2, [-5, 70, 20, 20]), _ann(3, [10, 10, 0, 5]),
            _ann(4, [200, 10, 5, 5]), _ann(5, [10, 10, float("nan"), 3])]
    path = write_coco(tmp_path / "a.json", [_image(1)], anns)
    with pytest.warns(DataWarning) as record:
        coco = load_coco_annotations(path)
    message = str(record[0].message)
    assert "1 clipped" in message and "1 skipped (non-positive" in message and "1 skipped (outside" in message
    assert "1 skipped (bbox not 4 finite" in message
    boxes = [a["bbox"] for a in coco.coco.dataset["annotations"]]
    assert boxes == [[10, 10, 20, 20], [0.0, 70.0, 15.0, 10.0]]
    np.testing.assert_allclose(coco.labels[1][:, 1:], [[10, 10, 30, 30], [0, 70, 15, 80]])


def test_annotation_id_zero_is_renumbered(tmp_path):
    path = write_coco(tmp_path / "a.json", [_image(1)], [_ann(0, [1, 1, 5, 5]), _ann(0, [20, 20, 5, 5])])
    with pytest.warns(DataWarning, match="renumbered"):
        coco = load_coco_annotations(path)
    assert [a["id"] for a in coco.coco.dataset["annotations"]] == [1, 2]


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d.pop("categories"), "missing or non-list 'categories'"),
    (lambda d: d["images"][0].pop("width"), r"lacks \['width'\]"),
    (lambda d: d["annotations"][0].pop("bbox"), r"lacks \['bbox'\]"),
    (lambda d: d["annotations"][0].update(category_id=4), "category_id 4, not one of the categories"),
    (lambda d: d["annotations"][0].update(image_id=7), "image id 7, which is not in 'images'"),
    (lambda d: d["images"].append(dict(d["images"][0])), "image id 1 appears twice"),
    (lambda d: d["images"][0].update(height=0), "positive integer width/height"),
])
def test_malformed_annotations_raise(tmp_path, mutate, match):
    data = {"images": [_image(1)], "annotations": [_ann(1, [1, 1, 5, 5])],
            "categories": [{"id": 2, "name": "a"}]}
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=match):
        load_coco_annotations(path)


def test_unreadable_json_raises(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"images": [')
    with pytest.raises(DataError, match="not valid JSON"):
        load_coco_annotations(path)
    with pytest.raises(DataError, match="does not exist"):
        load_coco_annotations(tmp_path / "none.json")


def test_missing_corrupt_and_wrong_size_images(tmp_path, box_dataset):
    images, ann = box_dataset
    (images / "img_20.png").unlink()
    with pytest.raises(DataError, match=r"1 of 5 images .*img_20.png"):
        CocoDetectionDataset(images, ann, img_size=64)
    (images / "img_20.png").write_bytes(b"not a png")
    with pytest.warns(DataWarning, match=r"skipped 1 of 5 images .*img_20.png: not an image"):
        ds = CocoDetectionDataset(images, ann, img_size=64)  # found once, named, and left out
    assert 20 not in ds.image_ids and len(ds) == 4
    (images / "img_20.png").write_bytes(b"\xff\xd8\xff" + b"garbage" * 10 + b"\xff\xd9")  # whole, yet undecodable
    ds = CocoDetectionDataset(images, ann, img_size=64)
    with pytest.raises(DataError, match="cannot read image .*img_20.png"):
        ds[ds.image_ids.index(20)]
    cv2.imwrite(str(images / "img_20.png"), np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(DataError, match="10x10 but the json says"):
        ds[ds.image_ids.index(20)]


def test_img_size_must_fit_the_stride(box_dataset):
    with pytest.raises(DataError, match="use 96"):
        CocoDetectionDataset(*box_dataset, img_size=70)


# -- YOLO-txt -> COCO ---------------------------------------------------------------------------
def test_yolo_txt_conversion_round_trip(tmp_path):
    root = tmp_path / "ds"
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
    cv2.imwrite(str(root / "images/val/a.jpg"), np.zeros((50, 100, 3), np.uint8))
    cv2.imwrite(str(root / "images/val/b.png"), np.zeros((40, 40, 3), np.uint8))  # no label file: kept
    cv2.imwrite(str(root / "images/train/c.jpg"), np.zeros((20, 20, 3), np.uint8))
    (root / "labels/val/a.txt").write_text("1 0.5 0.5 0.2 0.4\n0 0.1 0.1 0.3 0.1 0.3 0.3\n")  # box + polygon
    (root / "labels/train/c.txt").write_text("0 0.5 0.5 1.2 0.5\n")  # partly outside: clipped
    data_yaml = root / "data.yaml"
    data_yaml.write_text("path: .\ntrain: images/train\nval: images/val\nnames: {0: cat, 1: dog}\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        rc = load_script("yolo_txt_to_coco").main(["--data", str(data_yaml), "--out", str(tmp_path / "coco")])
    assert rc == 0
    cfg = load_data_config(tmp_path / "coco" / "data.yaml")
    assert cfg.names == ["cat", "dog"]
    val = CocoDetectionDataset(cfg.val_images, cfg.val_ann, img_size=64)
    assert len(val) == 2 and val.category_ids == [1, 2]
    anns = sorted(val.coco.dataset["annotations"], key=lambda a: a["category_id"])
    np.testing.assert_allclose(anns[0]["bbox"], [10, 5, 20, 10], atol=1e-3)  # polygon -> enclosing box
    np.testing.assert_allclose(anns[1]["bbox"], [40, 15, 20, 20], atol=1e-3)
    train = load_coco_annotations(cfg.train_ann)
    np.testing.assert_allclose(train.coco.dataset["annotations"][0]["bbox"], [0, 5, 20, 10], atol=1e-3)


def test_yolo_txt_bad_class_index(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    cv2.imwrite(str(tmp_path / "images/a.jpg"), np.zeros((10, 10, 3), np.uint8))
    (tmp_path / "labels/a.txt").write_text("5 0.5 0.5 0.2 0.2\n")
    rc = load_script("yolo_txt_to_coco").main(["--images", str(tmp_path / "images"), "--names", "a", "b",
                                               "--out", str(tmp_path / "x.json")])
    assert rc == 2 and not (tmp_path / "x.json").exists()
