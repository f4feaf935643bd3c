r"""``yolo-prune sensitivity`` / ``scripts/sensitivity.py``: flags -> ``SensitivitySettings`` -> ``run_sensitivity``.

yolo-prune sensitivity --weights yolov7-tiny.pt --data data.yaml --max-images 100 \
        --ratios 0.2 0.4 0.6 --reduction 3 --recipe-out configs/prune/tiny-3x.yaml
yolo-prune prune --weights yolov7-tiny.pt --recipe configs/prune/tiny-3x.yaml
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from yolo_prune.cli.common import add_model_source_args, setting, settings_from_args, switch
from yolo_prune.jobs.sensitivity import run_sensitivity
from yolo_prune.pruning.allocation import TARGET_METRICS, Allocation
from yolo_prune.pruning.importance import IMPORTANCES
from yolo_prune.pruning.sensitivity import SCORE_SPLITS, UNIT_KINDS
from yolo_prune.pruning.settings import SCORE_METRICS, SensitivitySettings
from yolo_prune.reporting import format_table

HELP = "per-group pruning sensitivity scan and ratio allocation"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the sensitivity flags to ``parser`` (shared by the script and the CLI)."""
    s = SensitivitySettings
    add_model_source_args(parser.add_argument_group("model"),
                          weights_help="checkpoint to scan (official YOLOv7 or ultralytics .pt)",
                          cfg_help="model cfg: builds a random model when --weights is absent")
    data = parser.add_argument_group("evaluation")
    setting(data, "--data", settings=s, dest="data", type=Path, help="data yaml; its --split scores every point")
    setting(data, "--split", settings=s, dest="split", choices=SCORE_SPLITS,
            help="split that scores the points: val, or train (unaugmented) to keep val unseen by the allocation")
    setting(data, "--max-images", settings=s, dest="max_images", type=int, help="score on the first N images")
    setting(data, "--metric", settings=s, dest="metric", choices=SCORE_METRICS, help="score of each point")
    setting(data, "--batch", "--batch-size", settings=s, dest="batch_size", type=int, help="evaluation batch size")
    setting(data, "--device", settings=s, dest="device", help="'' (GPU if any), cpu, 0, cuda:1 (evaluation, latency)")
    setting(data, "--workers", settings=s, dest="workers", type=int, help="data-loading processes")
    _add_scan_args(parser.add_argument_group("scan"))
    _add_allocation_args(parser.add_argument_group("allocation (optional)"))
    out = parser.add_argument_group("output")
    setting(out, "--out", settings=s, dest="out", type=Path, help="output folder (default: runs/sensitivity/<model>)")
    switch(out, "--force", dest="force", help="overwrite existing outputs")
    return parser


def _add_scan_args(scan: argparse._ArgumentGroup) -> None:
    s = SensitivitySettings
    setting(scan, "--ratios", settings=s, dest="ratios", type=float, nargs="+", help="ratios tried per unit")
    setting(scan, "--units", settings=s, dest="units",
            help=f"{' | '.join(UNIT_KINDS)} | a yaml of {{stage name: [module globs]}}")
    setting(scan, "--importance", settings=s, dest="importance", help=f"criterion: {', '.join(IMPORTANCES.names())}")
    setting(scan, "--round-to", settings=s, dest="round_to", type=int, help="keep channel counts multiples of this")
    setting(scan, "--img", "--img-size", settings=s, dest="img_size", type=int, help="input size for evaluation, tracing and MACs")
    switch(scan, "--latency", dest="latency", help="also measure fused latency of every point on --device")
    setting(scan, "--from-scan", settings=s, dest="from_scan", type=Path,
            help="skip the scan: allocate from this sensitivity.json")


def _add_allocation_args(alloc: argparse._ArgumentGroup) -> None:
    s = SensitivitySettings
    target = alloc.add_mutually_exclusive_group()
    setting(target, "--target-gmacs", settings=s, dest="target_gmacs", type=float, help="reach this many GMACs")
    setting(target, "--target-params-m", settings=s, dest="target_params_m", type=float,
            help="reach this many million parameters")
    setting(target, "--target-latency-ms", settings=s, dest="target_latency_ms", type=float,
            help="reach this latency (needs a scan with --latency)")
    setting(target, "--reduction", settings=s, dest="reduction", type=float,
            help="reach baseline / R of --reduction-metric, e.g. 3")
    setting(alloc, "--reduction-metric", settings=s, dest="reduction_metric", choices=list(TARGET_METRICS),
            help="metric of --reduction")
    setting(alloc, "--tolerance", settings=s, dest="tolerance", type=float, help="relative tolerance of the target")
    setting(alloc, "--step", settings=s, dest="step", type=float, help="ratio grid of the allocation")
    setting(alloc, "--max-ratio", settings=s, dest="max_ratio", type=float, help="no unit above this ratio")
    setting(alloc, "--recipe-out", settings=s, dest="recipe_out", type=Path,
            help="recipe yaml to write (default: <out>/recipe.yaml)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Runs the scan (or reads one) and the optional allocation; prints the allocation."""
    summary = run_sensitivity(settings_from_args(SensitivitySettings, args))
    if "scan_json" in summary:
        print(f"scan: {summary['scan_json']}, {summary.get('scan_png')}")
    if "result" in summary:
        print(format_allocation(summary["result"], summary["baseline"]))
        print(f"recipe: {summary['recipe']} (allocation details: {summary['allocation']})")
    return summary


def format_allocation(alloc: Allocation, baseline: float) -> str:
    """Unit ratios plus the predicted and measured result, as a terminal table."""
    rows = [[name, ratio] for name, ratio in sorted(alloc.unit_ratios.items(), key=lambda kv: -kv[1])]
    table = format_table(rows, ["unit", "ratio"]) if rows else "(no unit pruned)"
    t = alloc.target
    return (f"{table}\n{t.metric}: baseline {baseline:.4g}, target {t.value:.4g}, predicted "
            f"{alloc.predicted_value:.4g}, measured {alloc.measured_value:.4g}; predicted score drop "
            f"{alloc.predicted_drop:.4f}")
