"""``yolo-prune eval`` / ``scripts/evaluate.py``: flags -> ``EvalSettings`` -> ``run_eval``."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from yolo_prune.cli.common import (
    add_model_source_args,
    add_project_args,
    project_folder,
    setting,
    settings_from_args,
    switch,
)
from yolo_prune.evaluation.coco_eval import COCO_BACKENDS
from yolo_prune.evaluation.settings import EvalSettings
from yolo_prune.jobs.evaluate import run_eval
from yolo_prune.reporting import format_table

HELP = "COCO mAP and FPS of a checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the evaluation flags to ``parser`` (shared by the script and the CLI)."""
    s = EvalSettings
    add_model_source_args(parser.add_argument_group("model"),
                          weights_help="checkpoint to evaluate (YOLOv7 or Ultralytics .pt)",
                          cfg_help="model cfg: a random model when --weights is absent (pipeline checks)")
    data = parser.add_argument_group("data")
    setting(data, "--data", settings=s, dest="data", type=Path, help="data.yaml (COCO-format dataset)")
    setting(data, "--split", settings=s, dest="split", choices=("train", "val", "test"), help="split of --data")
    setting(data, "--ann", settings=s, dest="ann", type=Path, help="COCO annotation json (instead of --data)")
    setting(data, "--images", settings=s, dest="images", type=Path, help="image folder of --ann")
    _add_evaluation_args(parser.add_argument_group("evaluation"))
    out = parser.add_argument_group("output")
    setting(out, "--out", settings=s, dest="out", type=Path,
            help="metrics JSON path (default: beside --weights, *-eval.json)")
    setting(out, "--save-results", settings=s, dest="save_results", type=Path,
            help="also write the COCO detections json here")
    add_project_args(out, default=Path("runs/eval/exp"), what="the metrics JSON goes into")
    return parser


def eval_out(args: argparse.Namespace) -> Path | None:
    """``--out``, else ``PROJECT/NAME/<model>-eval.json`` when ``--project`` or ``--name`` is given, else None."""
    if args.project is None and args.name is None:
        return args.out
    folder = project_folder(args, Path("runs/eval/exp"))
    return folder / f"{Path(str(args.weights if args.weights is not None else args.cfg)).stem}-eval.json"


def _add_evaluation_args(run: argparse._ArgumentGroup) -> None:
    s = EvalSettings
    setting(run, "--img", "--img-size", settings=s, dest="img_size", type=int, help="inference size (long side, pixels)")
    setting(run, "--batch", "--batch-size", settings=s, dest="batch_size", type=int, help="batch size")
    setting(run, "--conf", "--conf-thres", settings=s, dest="conf_thres", type=float, help="NMS confidence threshold")
    setting(run, "--iou", "--iou-thres", settings=s, dest="iou_thres", type=float, help="NMS IoU threshold")
    setting(run, "--max-det", settings=s, dest="max_det", type=int, help="detections kept per image")
    setting(run, "--device", settings=s, dest="device", help="'' (GPU if any, else CPU), cpu, 0 or cuda:0")
    switch(run, "--half", dest="half", help="fp16 inference (CUDA only)")
    setting(run, "--backend", settings=s, dest="backend", help=f"metric backend: {', '.join(COCO_BACKENDS)}")
    setting(run, "--workers", settings=s, dest="workers", type=int, help="data loader processes")
    setting(run, "--max-images", settings=s, dest="max_images", type=int, help="evaluate only the first N images")
    switch(run, "--no-fuse", dest="fuse", off=True, help="evaluate the model without Conv+BN fusion")
    setting(run, "--bench-runs", settings=s, dest="bench_runs", type=int,
            help="latency runs (0: skip the latency benchmark)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluates the model of ``args``; prints a table (the JSON is written by the job)."""
    report = run_eval(settings_from_args(EvalSettings, args, out=eval_out(args)))
    print(format_eval_report(report))
    print(f"\nwrote {report['out']}")
    return report


def format_eval_report(report: dict[str, Any]) -> str:
    """Summary line table plus the per-class AP table (and the latency line when measured)."""
    m = report["metrics"]
    speed = m["speed_ms"]
    head = ["mAP50-95", "mAP50", "mAP75", "AP_S", "AP_M", "AP_L", "params_m", "gmacs", "infer_ms", "nms_ms"]
    row = [m["map50_95"], m["map50"], m["map75"], m["ap_small"], m["ap_medium"], m["ap_large"],
           report["model"]["params_m"], report["model"]["gmacs"], speed.get("inference"), speed.get("nms")]
    classes = [[c["name"], c["category_id"], c["n_gt"], c["ap50"], c["ap50_95"]] for c in m["per_class"]]
    text = format_table([row], head) + "\n\n" + format_table(classes, ["class", "coco_id", "n_gt", "AP50", "AP50-95"])
    if "latency" in report:
        lat = report["latency"]
        text += (f"\n\nlatency (fused, batch 1, {lat['device']}, {lat['threads']} threads): inference "
                 f"{lat['latency_ms_median']:.2f} ms (p10 {lat['latency_ms_p10']:.2f}, p90 {lat['latency_ms_p90']:.2f}), "
                 f"end to end {lat['end_to_end_ms_median']:.2f} ms, {lat['fps']:.1f} FPS (inference only)")
    return text
