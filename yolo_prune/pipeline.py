"""The main job, ``yolo-prune run``: baseline -> prune -> fine-tune -> evaluate -> report.

With no arguments it runs the embedded default on this machine: a synthetic COCO-format
shapes dataset, a yolov7-tiny baseline trained from its cfg, 50 % channel pruning and a
fine-tune, then one table (params, GMACs, mAP50-95, mAP50, FPS) for the three models and
a markdown / HTML / JSON report with plots. ``--weights`` and ``--data`` run the same job
on the user's own checkpoint and dataset.

Every stage writes into ``--out`` and is skipped when its output is already there, and an
interrupted fine-tune resumes from its ``last.pt``: re-running the command continues.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from yolo_prune import api
from yolo_prune.io import atomic_write_json, atomic_write_text
from yolo_prune.paths import HYP_DIR
from yolo_prune.reporting import format_table


@dataclass
class PipelineSettings:
    """Every default of the main job, in one place (sized for a 2-core CPU by default)."""

    weights: Path | None = None       # the user's checkpoint; None: train a baseline from ``cfg``
    cfg: str = "yolov7-tiny"
    data: Path | None = None          # the user's data yaml; None: the synthetic shapes set
    out: Path = Path("runs/demo")
    img_size: int = 160
    synthetic_train: int = 400
    synthetic_val: int = 100
    baseline_epochs: int = 60
    finetune_epochs: int = 30
    batch_size: int = 16
    nominal_batch: int = 16           # optimizer step every this many images
    val_period: int = 3               # validate during fine-tuning every this many epochs
    ratio: float = 0.5
    importance: str = "l2"
    round_to: int | None = 8
    distill: bool = False             # use the baseline as teacher while fine-tuning
    hyp_baseline: str | None = str(HYP_DIR / "hyp.scratch.tiny.yaml")
    hyp_finetune: str | None = None   # None: the project's fine-tuning hyp
    device: str = ""
    workers: int = 2
    seed: int = 0
    trust: bool = False
    fps_runs: int = 20


def add_run_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the main job's flags; each defaults to ``PipelineSettings``."""
    d = PipelineSettings()
    parser.add_argument("--weights", type=Path, help="your checkpoint (default: train a baseline from --cfg)")
    parser.add_argument("--cfg", default=d.cfg, help="model cfg of the baseline (default %(default)s)")
    parser.add_argument("--data", type=Path, help="your data yaml (default: generate the synthetic shapes set)")
    parser.add_argument("--out", type=Path, default=d.out, help="run folder; re-running continues (default %(default)s)")
    parser.add_argument("--img", "--img-size", dest="img_size", type=int, default=d.img_size, help="train/eval size (%(default)s)")
    parser.add_argument("--baseline-epochs", type=int, default=d.baseline_epochs)
    parser.add_argument("--finetune-epochs", type=int, default=d.finetune_epochs)
    parser.add_argument("--batch", "--batch-size", dest="batch_size", type=int, default=d.batch_size)
    parser.add_argument("--ratio", type=float, default=d.ratio, help="channel pruning ratio (%(default)s)")
    parser.add_argument("--importance", default=d.importance)
    parser.add_argument("--round-to", type=int, default=d.round_to)
    parser.add_argument("--distill", action="store_true", help="distil from the unpruned model while fine-tuning")
    parser.add_argument("--synthetic-train", type=int, default=d.synthetic_train)
    parser.add_argument("--synthetic-val", type=int, default=d.synthetic_val)
    parser.add_argument("--device", default=d.device)
    parser.add_argument("--workers", type=int, default=d.workers)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--trust-checkpoint", dest="trust", action="store_true")
    return parser


def run_pipeline(args: argparse.Namespace) -> dict[str, Any]:
    """CLI entry: namespace -> settings -> ``main_job``."""
    fields = {f.name for f in dataclasses.fields(PipelineSettings)}
    return main_job(PipelineSettings(**{k: v for k, v in vars(args).items() if k in fields}))


def main_job(s: PipelineSettings) -> dict[str, Any]:
    """Runs (or continues) every stage; returns the report dict also written to ``report.json``."""
    s.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(yaml.safe_dump(_plain(dataclasses.asdict(s)), sort_keys=False), s.out / "settings.yaml")
    started = time.perf_counter()
    data = s.data or _synthetic_data(s)
    baseline_path = s.weights or _train_baseline(s, data)
    pruned_path = _prune(s, baseline_path)
    finetuned_path = _finetune(s, data, pruned_path, baseline_path)
    stages = {"baseline": baseline_path, "pruned": pruned_path, "pruned+finetuned": finetuned_path}
    rows = {name: _evaluate(s, data, path, name) for name, path in stages.items()}
    report = {"settings": _plain(dataclasses.asdict(s)), "data": str(data), "models": list(rows.values()),
              "wall_s": round(time.perf_counter() - started, 1)}
    report["targets"] = _targets(rows["baseline"], rows["pruned+finetuned"])
    atomic_write_json(report, s.out / "report.json")
    _write_pages(s, report)
    print("\n" + summary_table(report["models"]))
    t = report["targets"]
    print(f"\nfine-tuned pruned model keeps {t['map_retained']:.1%} of the baseline mAP50-95 with "
          f"{t['macs_reduction']:.2f}x fewer MACs (targets: >= 95 %, >= 3x). Report: {s.out / 'report' / 'report.md'}")
    return report


def summary_table(models: list[dict[str, Any]]) -> str:
    rows = [[m["name"], m["params_m"], m["gmacs"], m["map50_95"], m["map50"], m["fps"], m["latency_ms"]]
            for m in models]
    return format_table(rows, ["model", "params (M)", "GMACs", "mAP50-95", "mAP50", "FPS", "latency (ms)"])


# -- stages --------------------------------------------------------------------------
def _synthetic_data(s: PipelineSettings) -> Path:
    from yolo_prune.data.synthetic import make_synthetic_dataset

    data_yaml = s.out / "data" / "data.yaml"
    if data_yaml.exists():
        return data_yaml
    print(f"[1/5] writing the synthetic dataset to {data_yaml.parent}")
    return make_synthetic_dataset(data_yaml.parent, n_train=s.synthetic_train, n_val=s.synthetic_val,
                                  img_size=s.img_size, seed=s.seed)


def _train_baseline(s: PipelineSettings, data: Path) -> Path:
    return _train(s.out / "baseline", s, data, epochs=s.baseline_epochs, hyp=s.hyp_baseline, cfg=s.cfg,
                  step=f"[2/5] training the {s.cfg} baseline")


def _prune(s: PipelineSettings, baseline: Path) -> Path:
    out = s.out / "pruned" / "pruned.pt"
    if out.exists():
        return out
    print(f"[3/5] pruning {baseline} at ratio {s.ratio} ({s.importance}, round_to {s.round_to})")
    loaded = api.load(baseline, trust=s.trust)
    result = api.prune(loaded, img_size=s.img_size, importance=s.importance, pruning_ratio=s.ratio,
                       round_to=s.round_to, seed=s.seed)
    api.save(loaded, out)
    atomic_write_json(result.summary(), out.with_suffix(".json"))
    return out


def _finetune(s: PipelineSettings, data: Path, pruned: Path, baseline: Path) -> Path:
    return _train(s.out / "finetune", s, data, epochs=s.finetune_epochs, hyp=s.hyp_finetune, weights=pruned,
                  teacher=baseline if s.distill else None, step="[4/5] fine-tuning the pruned model")


def _train(run: Path, s: PipelineSettings, data: Path, *, epochs: int, hyp: str | None, step: str,
           cfg: str | None = None, weights: Path | None = None, teacher: Path | None = None) -> Path:
    """Trains into ``run`` unless finished; resumes a run that was interrupted."""
    from yolo_prune.api import finetune

    best, last, done = run / "weights" / "best.pt", run / "weights" / "last.pt", run / "done.json"
    if done.exists() or (last.exists() and _finished(last)):
        return best
    if last.exists():  # interrupted: continue exactly where it stopped
        print(f"{step}: continuing the interrupted run in {run}")
        result = finetune(resume=run)
    else:
        print(f"{step} for {epochs} epochs ({run})")
        result = finetune(weights, cfg=cfg, data=data, out_dir=run, hyp=hyp, teacher=teacher, exist_ok=True,
                          trust=s.trust, epochs=epochs, img_size=s.img_size, batch_size=s.batch_size,
                          nominal_batch=s.nominal_batch, val_period=s.val_period, device=s.device,
                          workers=s.workers, seed=s.seed)
    atomic_write_json(result.summary(), done)
    return best


def _finished(last: Path) -> bool:
    """True when ``last.pt`` holds the final epoch of its run (crash after training, before done.json)."""
    from yolo_prune.engine.checkpointing import TRAIN_STATE_KEY
    from yolo_prune.io import read_checkpoint

    ckpt = read_checkpoint(last)
    return int(ckpt["epoch"]) + 1 >= int(ckpt[TRAIN_STATE_KEY]["settings"]["epochs"])


def _evaluate(s: PipelineSettings, data: Path, weights: Path, name: str) -> dict[str, Any]:
    """mAP on the val split plus params, GMACs and fused batch-1 latency, cached per stage."""
    from yolo_prune.data import load_data_config
    from yolo_prune.pruning import conv_out_channels

    cache = s.out / "eval" / f"{name.replace('+', '_')}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    print(f"[5/5] evaluating {name} ({weights})")
    loaded = api.load(weights, trust=s.trust)
    cfg = load_data_config(data)
    device = s.device or "cpu"
    metrics = api.evaluate(loaded, cfg.val_images, cfg.val_ann, img_size=s.img_size, batch_size=s.batch_size,
                           device=device, workers=s.workers)
    bench = api.benchmark(loaded, s.img_size, batch=1, runs=s.fps_runs, device=device)
    latency_ms = bench["latency"]["latency_ms_median"]
    row = {"name": name, "source": str(weights), "params_m": bench["params_m"], "gmacs": bench["gmacs"],
           "file_mb": weights.stat().st_size / 2**20, "map50_95": float(metrics["map50_95"]),
           "map50": float(metrics["map50"]), "latency_ms": latency_ms, "fps": 1000.0 / latency_ms,
           "end_to_end_ms": bench["latency"]["end_to_end_ms_median"], "device": bench["latency"]["device"],
           "channels": conv_out_channels(loaded.model)}
    atomic_write_json(row, cache)
    return row


def _targets(baseline: dict[str, Any], finetuned: dict[str, Any]) -> dict[str, float]:
    return {"map_retained": finetuned["map50_95"] / baseline["map50_95"] if baseline["map50_95"] else 0.0,
            "macs_reduction": baseline["gmacs"] / finetuned["gmacs"]}


def _write_pages(s: PipelineSettings, report: dict[str, Any]) -> None:
    from yolo_prune.report import build_report

    notes = [f"Command: `yolo-prune run --out {s.out}` (settings in `settings.yaml`).",
             f"mAP kept after pruning + fine-tuning: {report['targets']['map_retained']:.1%}; "
             f"MACs reduction: {report['targets']['macs_reduction']:.2f}x."]
    build_report(report["models"], s.out / "report", title="yolo-prune: baseline vs pruned vs fine-tuned", notes=notes)


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}
