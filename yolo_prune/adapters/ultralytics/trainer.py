"""Fine-tuning a (pruned) Ultralytics model with Ultralytics' own trainer.

``PrunedDetectionTrainer`` subclasses ``ultralytics.models.yolo.detect.DetectionTrainer``;
nothing of Ultralytics is patched. It changes three things:

* ``get_model`` returns the model it was given instead of building one from the model
  yaml (a rebuild would restore the unpruned widths);
* ``save_model`` writes the usual Ultralytics checkpoint dict with the EMA model in float32
  (Ultralytics halves it), atomically;
* ``final_eval`` finalises ``last.pt`` / ``best.pt`` (optimizer dropped, EMA promoted to
  ``model``) in float32 as well, then validates ``best.pt`` as Ultralytics does.

Datasets in this project are COCO json; ``coco_to_yolo`` writes the YOLO txt layout the
trainer reads (images linked, not copied).
"""
from __future__ import annotations

import copy
import io
import json
import os
import shutil
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from ultralytics import __version__ as UL_VERSION
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import DEFAULT_CFG, DEFAULT_CFG_DICT, DEFAULT_CFG_KEYS, LOGGER, RANK

from yolo_prune.adapters.ultralytics.checkpoint import load_checkpoint
from yolo_prune.engine.classes import fit_classes
from yolo_prune.io import LoadedModel, atomic_path, atomic_torch_save, atomic_write_text
from yolo_prune.io.atomic import current_umask
from yolo_prune.io.plain import plain_values
from yolo_prune.settings import IMG_SIZE

# Splits written by coco_to_yolo, in the order Ultralytics' data yaml names them.
_SPLITS = ("train", "val")


class PrunedDetectionTrainer(DetectionTrainer):
    """``DetectionTrainer`` for a model that exists already (e.g. pruned) and must not be rebuilt.

    Three ways to use it:

    >>> PrunedDetectionTrainer(model=pruned, overrides={"data": "data.yaml", "epochs": 10}).train()
    >>> YOLO("pruned.pt").train(data="data.yaml", epochs=10, trainer=PrunedDetectionTrainer)
    >>> PrunedDetectionTrainer(overrides={"resume": "runs/x/weights/last.pt"}).train()

    (Plain ``YOLO("pruned.pt").train(...)`` would rebuild the unpruned model from its yaml and
    keep only the weights whose shapes still fit.)
    """

    def __init__(self, cfg: Any = DEFAULT_CFG, overrides: dict | None = None, _callbacks: dict | None = None, *,
                 model: nn.Module | None = None, provenance: dict | None = None, rename_classes: bool = False) -> None:
        overrides = dict(overrides or {})
        self.given_model = model
        self.rename_classes = rename_classes
        self.provenance = dict(provenance or {})  # stored under 'yolo_prune' in every checkpoint
        if model is not None:
            overrides.setdefault("model", _model_label(model))  # not a .pt, so setup_model calls get_model
        super().__init__(cfg, overrides=overrides, _callbacks=_callbacks)
        if self.ddp:
            raise NotImplementedError("PrunedDetectionTrainer trains on one device; multi-GPU DDP would rebuild the "
                                      "model in worker processes. Pass a single device such as device=0")

    def get_model(self, cfg: Any = None, weights: Any = None, verbose: bool = True) -> nn.Module:
        """The model as it is, never rebuilt from ``cfg``.

        That is the model given to the constructor, else ``weights`` when it is a model
        (``YOLO(path).train(trainer=...)`` passes the loaded file's model; resuming passes the
        model stored in last.pt), which already has the pruned architecture. When the data has
        other classes, the head's class convs are rebuilt for them (``UltralyticsAdapter.set_classes``).
        """
        model = self.given_model if self.given_model is not None and not self.resume else weights
        if not isinstance(model, nn.Module):
            raise ValueError("PrunedDetectionTrainer has no model to train: pass model=..., train through "
                             "YOLO('pruned.pt').train(trainer=PrunedDetectionTrainer), or resume a run")
        note = _fit_data_classes(model, self.data["names"], rename=self.rename_classes, seed=self.args.seed)
        if note and verbose and RANK in {-1, 0}:
            LOGGER.info(note)
        return model

    def save_model(self) -> bool:
        """Writes last.pt (and best.pt / epochN.pt) with the EMA model in float32, atomically."""
        ema = copy.deepcopy(self.ema.ema).float().to(memory_format=torch.contiguous_format)
        ema.criterion = None  # training-only state
        buffer = io.BytesIO()
        torch.save(plain_values({
            "epoch": self.epoch,
            "best_fitness": self.best_fitness,
            "stopper": {"best_fitness": self.stopper.best_fitness, "best_epoch": self.stopper.best_epoch},
            "model": None,  # as in Ultralytics: resume and final checkpoints derive from the EMA
            "ema": ema,
            "updates": self.ema.updates,
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "scaler": self.scaler.state_dict(),
            "train_args": vars(self.args),
            "train_metrics": {**self.metrics, "fitness": self.fitness},
            "train_results": self.read_results_csv(),
            "date": datetime.now().astimezone().isoformat(),
            "version": UL_VERSION,
            "yolo_prune": self.provenance,
        }), buffer)
        data = buffer.getvalue()
        targets = [self.last]
        if self.best_fitness == self.fitness:
            targets.append(self.best)
        if self.save_period > 0 and self.epoch % self.save_period == 0:
            targets.append(self.wdir / f"epoch{self.epoch}.pt")
        for target in targets:
            with atomic_path(target) as tmp:
                tmp.write_bytes(data)
        return True

    def final_eval(self) -> None:
        """Finalises the checkpoints in float32, then validates best.pt (as Ultralytics does)."""
        if RANK not in {-1, 0}:
            return
        last = finalize_checkpoint(self.last) if self.last.exists() else {}
        if not self.best.exists():
            return
        finalize_checkpoint(self.best, updates={"train_results": last.get("train_results")})
        self.validator.args.plots = self.args.plots
        self.validator.args.compile = False
        self.metrics = self.validator(model=self.best)
        self.metrics.pop("fitness", None)
        self.epoch += 1  # log the best model's metrics as one more epoch, like Ultralytics
        self.run_callbacks("on_fit_epoch_end")
        self.epoch -= 1


def _fit_data_classes(model: nn.Module, data_names: dict | list, *, rename: bool, seed: int = 0) -> str | None:
    """``fit_classes`` for a bare Ultralytics model and the data yaml's ``names``."""
    from yolo_prune.adapters.base import get_adapter  # by name: the adapter module imports this one

    names = [data_names[k] for k in sorted(data_names)] if isinstance(data_names, dict) else list(data_names)
    current = model.names
    current = [current[k] for k in sorted(current)] if isinstance(current, dict) else list(current)
    loaded = LoadedModel(model=model, family="ultralytics", names=[str(n) for n in current], stride=[])
    return fit_classes(loaded, get_adapter("ultralytics"), names, rename=rename, seed=seed)


def finalize_checkpoint(path: str | Path, updates: dict | None = None) -> dict:
    """Ultralytics' ``strip_optimizer`` without the fp16 cast: EMA becomes ``model``, training state goes.

    Only for checkpoints this trainer wrote moments ago (it unpickles them in full).
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = ckpt.get("ema") or ckpt["model"]
    if hasattr(model, "args"):
        model.args = dict(vars(model.args) if not isinstance(model.args, dict) else model.args)
    model.criterion = None
    for p in model.parameters():
        p.requires_grad_(False)
    args = {**DEFAULT_CFG_DICT, **ckpt.get("train_args", {})}
    ckpt.update(model=model.float(), ema=None, optimizer=None, best_fitness=None, stopper=None, updates=None,
                scaler=None, epoch=-1, date=datetime.now().astimezone().isoformat(), version=UL_VERSION,
                train_args={k: v for k, v in args.items() if k in DEFAULT_CFG_KEYS})
    ckpt.update(updates or {})
    ckpt = plain_values(ckpt)
    atomic_torch_save(ckpt, path)
    return ckpt


def finetune(loaded: LoadedModel, data: str | Path, *, epochs: int = 10, img_size: int = IMG_SIZE, batch_size: int = 16,
             device: str | int | None = None, project: str | Path = "runs/finetune", name: str = "ultralytics",
             workers: int = 0, seed: int = 0, rename_classes: bool = False, **overrides: Any) -> LoadedModel:
    """Fine-tunes ``loaded.model`` (a copy; ``loaded`` is untouched) with Ultralytics' trainer.

    Args:
        loaded: An Ultralytics model, typically pruned.
        data: This project's COCO-json data yaml (converted under the run folder) or an
            Ultralytics data yaml (``train:``/``val:`` image folders with YOLO txt labels).
        epochs: Ultralytics' ``epochs``.
        img_size: Ultralytics' ``imgsz``.
        batch_size: Ultralytics' ``batch``.
        device: Ultralytics' ``device`` (None: CPU).
        project: The run writes to ``project/name`` (weights/last.pt, best.pt, args.yaml).
        name: See ``project``.
        workers: Ultralytics' ``workers``.
        seed: Ultralytics' ``seed``.
        rename_classes: Equal class counts under other names: train under the data's names.
        **overrides: Any other Ultralytics training argument (``lr0``, ``optimizer``, ...).

    Returns:
        The fine-tuned model loaded from best.pt (last.pt when no validation ran), with
        ``meta['run_dir']`` and ``meta['metrics']``.
    """
    run_dir = Path(project).resolve() / name
    cuda = device not in (None, "cpu") and torch.cuda.is_available()
    args = dict(data=str(ultralytics_data_yaml(data, run_dir / "yolo_data")), epochs=epochs, imgsz=img_size,
                batch=batch_size, device=device if device is not None else "cpu", workers=workers, seed=seed,
                project=str(run_dir.parent), name=name, exist_ok=True, plots=False, amp=cuda, verbose=False)
    args.update(overrides)
    model = copy.deepcopy(loaded.model).float()
    provenance = {k: v for k, v in loaded.meta.items()
                  if k not in ("epoch", "best_fitness", "date", "version", "train_args", "run_dir", "metrics")}
    trainer = PrunedDetectionTrainer(overrides=args, model=model, provenance=provenance, rename_classes=rename_classes)
    trainer.train()
    best = trainer.best if trainer.best.exists() else trainer.last
    result = load_checkpoint(best)
    result.meta.update(run_dir=str(trainer.save_dir), metrics=dict(trainer.metrics or {}), **provenance)
    return result


def ultralytics_data_yaml(data: str | Path, out_dir: str | Path) -> Path:
    """An Ultralytics data yaml for ``data``: itself if it is one, else converted from COCO json."""
    data = Path(data)
    if not data.is_file():
        raise FileNotFoundError(f"data yaml {data} does not exist; pass this project's data.yaml (COCO json) "
                                "or an Ultralytics data yaml")
    spec = yaml.safe_load(data.read_text()) or {}
    if not any(str(key).endswith("_ann") for key in spec):  # Ultralytics layout: train/val image folders
        return data
    from yolo_prune.data.config import load_data_config

    cfg = load_data_config(data)
    splits = {split: cfg.split(split) for split in _SPLITS}
    return coco_to_yolo(splits, out_dir, names=list(cfg.names) or None)


def coco_to_yolo(splits: dict[str, tuple[str | Path, str | Path]], out_dir: str | Path, *,
                 names: list[str] | None = None) -> Path:
    """Writes the YOLO txt layout for COCO-json splits and returns its ``data.yaml``.

    ``out_dir/images/<split>/`` links the images, ``out_dir/labels/<split>/*.txt`` holds one
    ``cls cx cy w h`` row (normalised) per non-crowd box. Classes are the COCO categories
    sorted by id (so class ``i`` is the ``i``-th smallest category id, as in this project's
    COCO dataset). Each split's labels are built in a temporary folder and moved in whole.

    Args:
        splits: ``{"train": (images_dir, ann_json), "val": (...)}``.
        out_dir: Folder to write (created; earlier conversions are replaced).
        names: Class names overriding the json's category names.
    """
    out_dir = Path(out_dir).resolve()
    coco = {split: json.loads(Path(ann).read_text()) for split, (_, ann) in splits.items()}
    category_ids = sorted({c["id"] for d in coco.values() for c in d.get("categories", [])})
    if not category_ids:
        raise ValueError(f"no categories in {[str(a) for _, a in splits.values()]}; a COCO json needs 'categories'")
    index = {cid: i for i, cid in enumerate(category_ids)}
    json_names = {c["id"]: c["name"] for d in coco.values() for c in d["categories"]}
    names = list(names) if names else [json_names[cid] for cid in category_ids]
    if len(names) != len(category_ids):
        raise ValueError(f"{len(names)} names given for {len(category_ids)} COCO categories")
    for split, (images_dir, _) in splits.items():
        _write_split(coco[split], Path(images_dir), out_dir, split, index)
    spec = {"path": str(out_dir), "names": dict(enumerate(names)),
            **{split: f"images/{split}" for split in splits}}
    return atomic_write_text(yaml.safe_dump(spec, sort_keys=False), out_dir / "data.yaml")


def _write_split(coco: dict, images_dir: Path, out_dir: Path, split: str, index: dict[int, int]) -> None:
    rows: dict[int, list[str]] = {img["id"]: [] for img in coco["images"]}
    sizes = {img["id"]: (img["width"], img["height"]) for img in coco["images"]}
    for ann in coco.get("annotations", []):
        row = _label_row(ann, sizes[ann["image_id"]], index)
        if row:
            rows[ann["image_id"]].append(row)
    labels_tmp = Path(tempfile.mkdtemp(prefix=f".{split}.", dir=_mkdir(out_dir / "labels")))
    images_tmp = Path(tempfile.mkdtemp(prefix=f".{split}.", dir=_mkdir(out_dir / "images")))
    try:
        for img in coco["images"]:
            rel = Path(img["file_name"])
            _mkdir((labels_tmp / rel).parent)
            (labels_tmp / rel).with_suffix(".txt").write_text("".join(rows[img["id"]]))
            _mkdir((images_tmp / rel).parent)
            _link_or_copy((images_dir / rel).resolve(), images_tmp / rel)
        for tmp, final in ((labels_tmp, out_dir / "labels" / split), (images_tmp, out_dir / "images" / split)):
            os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes private folders; outputs follow the umask
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        (out_dir / "labels" / f"{split}.cache").unlink(missing_ok=True)  # Ultralytics' label cache is stale now
    finally:
        for tmp in (labels_tmp, images_tmp):
            if tmp.exists():
                shutil.rmtree(tmp)


def _label_row(ann: dict, size: tuple[int, int], index: dict[int, int]) -> str:
    r"""``"cls cx cy w h\\n"`` normalised and clipped to the image, or "" for crowd / empty boxes."""
    if ann.get("iscrowd", 0) or ann["category_id"] not in index:
        return ""
    w_img, h_img = size
    x, y, w, h = ann["bbox"]
    x1, y1 = min(max(x, 0.0), w_img), min(max(y, 0.0), h_img)
    x2, y2 = min(max(x + w, 0.0), w_img), min(max(y + h, 0.0), h_img)
    if x2 <= x1 or y2 <= y1:
        return ""
    cx, cy, bw, bh = (x1 + x2) / 2 / w_img, (y1 + y2) / 2 / h_img, (x2 - x1) / w_img, (y2 - y1) / h_img
    return f"{index[ann['category_id']]} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}\n"


def _link_or_copy(src: Path, dst: Path) -> None:
    if not src.is_file():
        raise FileNotFoundError(f"image {src} listed in the COCO json does not exist; check the images folder")
    try:
        os.symlink(src, dst)
    except OSError:  # e.g. Windows without symlink rights
        shutil.copy2(src, dst)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _model_label(model: nn.Module) -> str:
    """A name for Ultralytics' ``model`` argument that is not a .pt (so nothing is loaded from it)."""
    yaml_file = Path(str(getattr(model, "yaml", {}).get("yaml_file", "model.yaml")))
    return f"{yaml_file.stem}-given.yaml"
