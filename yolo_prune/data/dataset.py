"""``CocoDetectionDataset``: COCO-json detection data for YOLO training and evaluation.

Each item is ``(img, labels, image_id, shapes)``:

* ``img``: uint8 ``[3, H, W]`` RGB, letterboxed (evaluation) or augmented (training).
* ``labels``: float32 ``[n, 6]`` = (0, class, cx, cy, w, h) normalised to ``img``; crowd boxes
  are not targets. Column 0 receives the batch index in ``collate_fn``.
* ``image_id``: the COCO image id.
* ``shapes``: ``((h0, w0), ((ratio_h, ratio_w), (pad_w, pad_h)))`` mapping ``img`` back to the
  original image (``yolo_prune.data.transforms.scale_boxes``); None for augmented items, whose
  geometry was changed at random.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from yolo_prune.data import augment as aug
from yolo_prune.data.coco import load_coco_annotations
from yolo_prune.data.errors import DataError, warn_data
from yolo_prune.data.images import image_problem
from yolo_prune.data.transforms import letterbox, map_boxes, xyxy_to_cxcywh
from yolo_prune.settings import IMG_SIZE

Shapes = tuple[tuple[int, int], tuple[tuple[float, float], tuple[float, float]]]


class CocoDetectionDataset(torch.utils.data.Dataset):
    """Images of a folder plus a COCO detection json.

    Args:
        images_dir: Folder that the json's ``file_name`` entries are relative to.
        ann_file: COCO detection json (checked and cleaned by ``load_coco_annotations``).
        img_size: Long side of the network input.
        augment: Training augmentations (``hyp`` keys, see ``yolo_prune.data.augment``).
        hyp: YOLOv7 hyper-parameters; missing augmentation keys take ``AUGMENT_DEFAULTS``.
        rect: Rectangular batches (evaluation): images are ordered by aspect ratio and each
            batch is padded only to its own stride-multiple shape. Batch ``k`` of a loader must
            then hold items ``k*batch_size ... (k+1)*batch_size - 1`` (no shuffling).
        batch_size: Batch size that ``rect`` shapes are computed for.
        stride: The model's largest stride; input sides are multiples of it.
        pad: Extra border (in strides) of rectangular batches, as YOLOv7's 0.5.

    Attributes:
        names: Class names (contiguous order). ``category_ids``: class index -> COCO id.
        coco: pycocotools ``COCO`` of the (cleaned) ground truth, crowd boxes included.
        mosaic: Whether augmented items may be mosaics; switch off for the last epochs.
    """

    def __init__(self, images_dir: str | Path, ann_file: str | Path, img_size: int = IMG_SIZE, augment: bool = False,
                 hyp: dict | None = None, rect: bool = False, batch_size: int = 16, stride: int = 32,
                 pad: float = 0.5) -> None:
        if img_size % stride:
            raise DataError(f"img_size {img_size} is not a multiple of the model stride {stride}; use "
                            f"{(img_size // stride + 1) * stride}")
        self.images_dir, self.img_size, self.augment, self.rect = Path(images_dir), img_size, augment, rect
        self.batch_size, self.stride, self.pad = batch_size, stride, pad
        self.hyp = _augment_hyp(hyp) if augment else dict(aug.AUGMENT_DEFAULTS)
        anns = load_coco_annotations(ann_file)
        self.ann_file = Path(ann_file)
        self.coco, self.names, self.category_ids = anns.coco, anns.names, anns.category_ids
        self.images = anns.images
        self.labels = [anns.labels[img["id"]] for img in self.images]
        self.mosaic = augment and self.hyp["mosaic"] > 0 and not rect
        self._check_files()
        self._skip_broken_images()
        self._check_not_empty()
        self.batch_shapes = self._rect_shapes() if rect else None

    def __len__(self) -> int:
        return len(self.images)

    @property
    def n_boxes(self) -> int:
        """Training boxes (crowd regions excluded) over all items."""
        return sum(len(lb) for lb in self.labels)

    @property
    def image_ids(self) -> list[int]:
        """COCO image ids in item order."""
        return [img["id"] for img in self.images]

    def _check_files(self) -> None:
        missing = [img["file_name"] for img in self.images if not (self.images_dir / img["file_name"]).is_file()]
        if missing:
            raise DataError(f"{len(missing)} of {len(self.images)} images listed in the annotation json are not in "
                            f"{self.images_dir} (first: {missing[:3]}); point the images folder ('train:'/'val:' "
                            f"in the data yaml) at the folder that holds them")

    def _skip_broken_images(self) -> None:
        """Drops corrupt or truncated image files (and their boxes) with one warning that names and counts them."""
        problems = {i: image_problem(self.images_dir / img["file_name"]) for i, img in enumerate(self.images)}
        broken = {i: why for i, why in problems.items() if why is not None}
        if not broken:
            return
        named = "; ".join(f"{self.images[i]['file_name']}: {why}" for i, why in list(broken.items())[:3])
        more = f"; ... ({len(broken) - 3} more)" if len(broken) > 3 else ""
        warn_data(f"{self.ann_file}: skipped {len(broken)} of {len(self.images)} images (and their boxes) that are "
                  f"corrupt or truncated ({named}{more}); replace them or re-export the dataset")
        self.images = [img for i, img in enumerate(self.images) if i not in broken]
        self.labels = [lb for i, lb in enumerate(self.labels) if i not in broken]

    def _check_not_empty(self) -> None:
        """An empty split, or training boxes that are all missing, are errors: nothing could be learnt or scored."""
        if not self.images:
            raise DataError(f"{self.ann_file} lists no usable images in {self.images_dir}; check the split's image "
                            f"folder and json in the data yaml")
        if self.augment and not self.n_boxes:
            raise DataError(f"{self.ann_file} has no annotations (0 boxes on {len(self.images)} images): a detector "
                            f"cannot learn from it; check that the split's '*_ann' json is the labelled one")

    def _rect_shapes(self) -> np.ndarray:
        """Orders items by aspect ratio and gives each batch its (h, w) input shape."""
        aspect = np.array([img["height"] / img["width"] for img in self.images])
        order = aspect.argsort(kind="stable")
        self.images = [self.images[i] for i in order]
        self.labels = [self.labels[i] for i in order]
        aspect = aspect[order]
        n_batches = int(np.ceil(len(self.images) / self.batch_size))
        shapes = np.ones((n_batches, 2))
        for b in range(n_batches):
            ar = aspect[b * self.batch_size:(b + 1) * self.batch_size]
            if ar.max() < 1:    # wide images: full width, reduced height
                shapes[b] = [ar.max(), 1]
            elif ar.min() > 1:  # tall images: full height, reduced width
                shapes[b] = [1, 1 / ar.min()]
        return (np.ceil(shapes * self.img_size / self.stride + self.pad).astype(int) * self.stride)

    # -- loading ------------------------------------------------------------------------
    def load_image(self, index: int) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
        """BGR image resized so its long side is ``img_size``; with (h0, w0) and (h, w)."""
        record = self.images[index]
        path = self.images_dir / record["file_name"]
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise DataError(f"cannot read image {path} (corrupt or not an image); replace it or remove it and "
                            f"its annotations from the json")
        h0, w0 = img.shape[:2]
        if (h0, w0) != (record["height"], record["width"]):
            raise DataError(f"{path} is {w0}x{h0} but the json says {record['width']}x{record['height']}; fix "
                            f"width/height in the json (boxes are in the json's coordinates)")
        r = self.img_size / max(h0, w0)
        if r != 1:
            interp = cv2.INTER_AREA if r < 1 and not self.augment else cv2.INTER_LINEAR
            img = cv2.resize(img, (max(1, round(w0 * r)), max(1, round(h0 * r))), interpolation=interp)
        return img, (h0, w0), img.shape[:2]

    def _resized_labels(self, index: int, h0w0: tuple[int, int], hw: tuple[int, int]) -> np.ndarray:
        labels = self.labels[index].copy()
        ratio = (hw[0] / h0w0[0], hw[1] / h0w0[1])
        labels[:, 1:5] = map_boxes(labels[:, 1:5], ratio, (0.0, 0.0))
        return labels

    def _letterboxed(self, index: int) -> tuple[np.ndarray, np.ndarray, Shapes]:
        img, h0w0, hw = self.load_image(index)
        shape = tuple(self.batch_shapes[index // self.batch_size]) if self.rect else self.img_size
        img, ratio, pad = letterbox(img, shape, auto=False, scaleup=self.augment, stride=self.stride)
        labels = self._resized_labels(index, h0w0, hw)
        labels[:, 1:5] = map_boxes(labels[:, 1:5], ratio, pad)
        total_ratio = (ratio[0] * hw[0] / h0w0[0], ratio[1] * hw[1] / h0w0[1])
        return img, labels, (h0w0, (total_ratio, pad))

    def _mosaic(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        indices = [index] + random.choices(range(len(self)), k=3)
        tiles = []
        for i in indices:
            img, h0w0, hw = self.load_image(i)
            tiles.append((img, self._resized_labels(i, h0w0, hw)))
        return aug.mosaic4(tiles, self.img_size, self.hyp)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int, Shapes | None]:
        hyp = self.hyp
        shapes: Shapes | None = None
        if self.augment and self.mosaic and random.random() < hyp["mosaic"]:
            img, labels = self._mosaic(index)
            if random.random() < hyp["mixup"]:
                img, labels = aug.mixup(img, labels, *self._mosaic(random.randrange(len(self))))
        else:
            img, labels, shapes = self._letterboxed(index)
            if self.augment:
                img, labels = aug.random_perspective(img, labels, hyp)
                shapes = None
        if self.augment:
            img = aug.augment_hsv(img, hyp["hsv_h"], hyp["hsv_s"], hyp["hsv_v"])
            img, labels = aug.random_flips(img, labels, hyp["flipud"], hyp["fliplr"])
        return _to_tensor(img), _to_targets(labels, img.shape[:2]), self.images[index]["id"], shapes

    @staticmethod
    def collate_fn(batch: list[tuple]) -> tuple[torch.Tensor, torch.Tensor, list[int], list[Shapes | None]]:
        """Stacks images; targets ``[M, 6]`` with the batch index in column 0."""
        imgs, labels, image_ids, shapes = zip(*batch, strict=True)
        if len({tuple(img.shape) for img in imgs}) > 1:
            raise DataError(f"images of one batch differ in shape ({sorted({tuple(i.shape) for i in imgs})}); a "
                            f"rect dataset must be read in order with the batch size it was built with")
        for i, lb in enumerate(labels):
            lb[:, 0] = i
        return torch.stack(imgs, 0), torch.cat(labels, 0), list(image_ids), list(shapes)


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    """HWC BGR -> CHW RGB uint8 tensor."""
    return torch.from_numpy(np.ascontiguousarray(img[:, :, ::-1].transpose(2, 0, 1)))


def _to_targets(labels: np.ndarray, shape: tuple[int, int]) -> torch.Tensor:
    """(class, x1, y1, x2, y2) pixels -> (0, class, cx, cy, w, h) normalised to ``shape``."""
    out = np.zeros((len(labels), 6), dtype=np.float32)
    if len(labels):
        boxes = xyxy_to_cxcywh(labels[:, 1:5])
        out[:, 1] = labels[:, 0]
        out[:, 2:6] = boxes / np.array([shape[1], shape[0], shape[1], shape[0]], dtype=np.float32)
    return torch.from_numpy(out)


def _augment_hyp(hyp: dict | None) -> dict[str, float]:
    hyp = dict(hyp or {})
    unused = [k for k in aug.UNSUPPORTED_KEYS if hyp.get(k)]
    if unused:
        warn_data(f"hyp {', '.join(f'{k}={hyp[k]}' for k in unused)} is not implemented by yolo_prune.data and is "
                  f"ignored; set it to 0.0 to silence this warning")
    return {key: float(hyp.get(key, default)) for key, default in aug.AUGMENT_DEFAULTS.items()}


def seed_worker(worker_id: int) -> None:
    """Seeds ``random`` and numpy in a loader worker from torch's per-worker seed."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def build_dataloader(dataset: Any, batch_size: int, *, shuffle: bool, workers: int,
                     sampler: Any = None, seed: int = 0) -> torch.utils.data.DataLoader:
    """A DataLoader with the dataset's ``collate_fn``; shuffling and worker seeds follow ``seed``.

    Args:
        dataset: A ``CocoDetectionDataset`` (or anything with the same item layout).
        batch_size: Images per batch.
        shuffle: Shuffle (ignored when a ``sampler`` is given).
        workers: Loader processes (0: load in the main process).
        sampler: E.g. a ``DistributedSampler``.
        seed: Seeds the shuffle order and the workers' augmentation randomness.
    """
    generator = torch.Generator()
    generator.manual_seed(seed)
    collate = getattr(dataset, "collate_fn", CocoDetectionDataset.collate_fn)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
        num_workers=workers, pin_memory=torch.cuda.is_available(), collate_fn=collate,
        worker_init_fn=seed_worker, generator=generator, persistent_workers=False, drop_last=False)
