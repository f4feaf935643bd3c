"""Recovery experiments: prune a trained baseline, fine-tune every arm with one budget, compare.

The building block of ``scripts/bench_recovery.py`` (the recovery table) and
``scripts/bench_finetune_recipes.py`` (fine-tuning curves). One *arm* is: load the baseline,
optionally prune it, evaluate it, fine-tune it with the shared ``Budget``, evaluate again.
The *control* arm is the unpruned baseline given the same budget; retention is an arm's
mAP over the control's. Each arm caches its row in ``<work>/<name>/row.json``, so an
interrupted experiment continues where it stopped.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from yolo_prune import api
from yolo_prune.data.batches import calibration_batches
from yolo_prune.io import atomic_write_json


@dataclass(frozen=True)
class Budget:
    """The fine-tune every arm gets: the same epochs, hyp, seed and batch for all."""

    epochs: int = 10
    img_size: int = 160
    batch_size: int = 8             # 50 optimizer steps per epoch on the 400-image demo set
    nominal_batch: int = 8
    hyp: str | None = None          # None: the project's fine-tuning hyp
    val_period: int = 5
    close_mosaic: int = 0           # final epochs without mosaic
    workers: int = 2
    device: str = ""
    seed: int = 0

    def finetune_settings(self) -> dict[str, Any]:
        """Keyword arguments of ``api.finetune`` (hyp excluded)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "hyp"}


def run_arm(work: Path, name: str, baseline: Path, data: Path, budget: Budget, *,
            prune_settings: dict[str, Any] | None = None, teacher: Path | None = None,
            taylor_data: tuple[Path, Path] | None = None, compensate: bool = False) -> dict[str, Any]:
    """Prunes (unless ``prune_settings`` is None: the control), fine-tunes and evaluates one arm.

    Args:
        work: Experiment folder; the arm writes ``<work>/<name>/``.
        name: Arm name (a folder name).
        baseline: Trained checkpoint every arm starts from.
        data: Data yaml (fine-tune on train, evaluate on val).
        budget: The shared fine-tune.
        prune_settings: ``prune_model`` keywords (``pruning_ratio``, ``importance``, ``round_to``,
            ``layer_ratios`` ...).
        teacher: Distil from this checkpoint while fine-tuning.
        taylor_data: ``(images_dir, ann_file)`` of real batches for gradient criteria.
        compensate: Refit the pruned model's consumers by least squares on ``data``'s train images.

    Returns:
        The row: settings, ``gmacs``, ``params_m``, ``map50_95_pruned`` / ``map50_pruned`` (before
        fine-tuning), ``map50_95`` / ``map50`` (after), ``latency_ms``, ``curve`` and ``wall_s``.
    """
    cache = work / name / "row.json"
    if cache.exists():
        return json.loads(cache.read_text())
    started = time.perf_counter()
    loaded = api.load(baseline)
    row: dict[str, Any] = {"name": name, "prune": _plain(prune_settings), "teacher": str(teacher) if teacher else None,
                           "epochs": budget.epochs, "hyp": budget.hyp}
    start_from = baseline
    if prune_settings is not None:
        batches = _taylor_batches(taylor_data, budget.img_size, prune_settings)
        calibration = calibration_batches(data, img_size=budget.img_size) if compensate else None
        row["prune"]["compensate"] = compensate
        api.prune(loaded, img_size=budget.img_size, taylor_batches=batches, calibration_batches=calibration,
                  **prune_settings)
        start_from = api.save(loaded, work / name / "pruned.pt")
    before = evaluate_checkpoint(start_from, data, budget)
    row.update({"map50_95_pruned": before["map50_95"], "map50_pruned": before["map50"]})
    result = api.finetune(start_from, data=data, out_dir=work / name / "finetune", hyp=budget.hyp, teacher=teacher,
                          exist_ok=True, **budget.finetune_settings())
    row.update(evaluate_checkpoint(result.best, data, budget, stats=True))
    row.update({"source": str(result.best), "curve": read_curve(result.out_dir / "results.csv"),
                "wall_s": round(time.perf_counter() - started, 1)})
    atomic_write_json(row, cache)
    return row


def evaluate_checkpoint(weights: Path, data: Path, budget: Budget, *, stats: bool = False) -> dict[str, float]:
    """mAP50-95 / mAP50 on the val split; with ``stats`` also params, GMACs and eager batch-1 latency."""
    from yolo_prune.data import load_data_config

    loaded = api.load(weights)
    cfg = load_data_config(data)
    device = budget.device or "cpu"
    metrics = api.evaluate(loaded, cfg.val_images, cfg.val_ann, img_size=budget.img_size,
                           batch_size=budget.batch_size, device=device, workers=budget.workers)
    out = {"map50_95": float(metrics["map50_95"]), "map50": float(metrics["map50"])}
    if stats:
        bench = api.benchmark(loaded, budget.img_size, batch=1, runs=20, device=device)
        out.update({"params_m": bench["params_m"], "gmacs": bench["gmacs"],
                    "latency_ms": bench["latency_ms"]})
    return out


def read_curve(results_csv: Path) -> list[dict[str, float]]:
    """Validation mAP per epoch (epochs counted from 1) from a run's ``results.csv``."""
    curve = []
    with results_csv.open() as f:
        for r in csv.DictReader(f):
            if r.get("metrics/mAP50-95"):
                curve.append({"epoch": int(r["epoch"]) + 1, "map50_95": float(r["metrics/mAP50-95"]),
                              "map50": float(r["metrics/mAP50"])})
    return curve


def with_retention(rows: Sequence[dict[str, Any]], control: dict[str, Any]) -> list[dict[str, Any]]:
    """Each row plus ``retention`` (mAP50-95 over the control's) and ``retention_map50``."""
    out = []
    for row in rows:
        out.append({**row, "retention": row["map50_95"] / control["map50_95"] if control["map50_95"] > 0 else None,
                    "retention_map50": row["map50"] / control["map50"] if control["map50"] > 0 else None})
    return out


def _taylor_batches(taylor_data: tuple[Path, Path] | None, img_size: int, prune_settings: dict[str, Any]) -> Any:
    from yolo_prune.pruning import get_importance

    if taylor_data is None or not get_importance(prune_settings.get("importance", "l2")).needs_gradients:
        return None
    from yolo_prune.data.batches import loss_batches

    return list(loss_batches(*taylor_data, img_size=img_size))


def _plain(values: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if values is None else {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}
