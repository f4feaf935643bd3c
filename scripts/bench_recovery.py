#!/usr/bin/env python3
"""The recovery table: how much accuracy each pruning criterion and ratio keeps after one fine-tune budget.

    python scripts/bench_recovery.py                          # shipped demo baseline, the demo set, 50 epochs
    python scripts/bench_recovery.py --epochs 2 --ratios 0.5 --importances l2 random --no-distill \
        --no-allocation --work /tmp/rec --out /tmp/rec/recovery.json   # smoke

Every row starts from the same trained baseline and gets the same fine-tune (epochs, hyp, seed, the
second half without mosaic):
ratios x criteria, distillation on/off at 0.5, l2 with least-squares compensation (``--compensate-at``,
default 0.5 and 0.7), a sensitivity-allocated recipe against the uniform ratio of equal GMACs, and
(``--allocate-at``, default 0.5) an allocation for the GMACs of a uniform ratio. The control is the
unpruned baseline given that fine-tune; ``retention`` is a row's mAP50-95 over the control's. ``random`` is the sanity floor: uniform pruning at one ratio keeps
the same channel counts whatever the criterion, so rows of one ratio have equal MACs and the table
says by how many points each criterion beats random there. Writes the JSON (one ``retention`` per
row) and a plot of mAP50-95 against GMACs, one line per criterion; re-running continues.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from yolo_prune.io import atomic_write_json  # noqa: E402
from yolo_prune.paths import HYP_DIR  # noqa: E402
from yolo_prune.pipeline import REDUCTION_TOLERANCE, PipelineSettings  # noqa: E402
from yolo_prune.recovery import Budget, run_arm, with_retention  # noqa: E402
from yolo_prune.reporting import format_table  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
LONG_HYP = HYP_DIR / "hyp.finetune.long.yaml"  # the fine-tune for this budget (its header says why)
EQUAL_GMACS = 0.05  # two rows within this (relative) have equal MACs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's flags."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", type=Path, help="trained checkpoint (default: the shipped demo baseline)")
    p.add_argument("--data", type=Path, help="data yaml (default: the demo set the shipped baseline was trained on)")
    p.add_argument("--work", type=Path, default=Path("runs/bench_recovery"), help="work folder (re-runs continue)")
    p.add_argument("--out", type=Path, default=RESULTS / "recovery.json", help="result JSON (plot beside it)")
    p.add_argument("--ratios", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    p.add_argument("--importances", nargs="+", default=["l2", "random", "bn_scale", "taylor", "lamp"])
    p.add_argument("--no-distill", dest="distill", action="store_false", help="skip the distillation row")
    p.add_argument("--compensate-at", type=float, nargs="*", default=[0.5, 0.7], metavar="RATIO",
                   help="also an l2 row with least-squares compensation at each ratio (none: skip)")
    p.add_argument("--allocate-at", type=float, nargs="*", default=[0.5], metavar="RATIO",
                   help="also allocate for the GMACs of the uniform l2 row at each ratio (none: skip)")
    p.add_argument("--no-allocation", dest="allocation", action="store_false",
                   help="skip the sensitivity-allocated vs uniform rows")
    p.add_argument("--epochs", type=int, default=50, help="fine-tune budget of every row")
    p.add_argument("--batch", type=int, default=PipelineSettings.batch_size,
                   help="fine-tune batch of every row (the main job's)")
    p.add_argument("--hyp", default=str(LONG_HYP), help="fine-tune hyp of every row (default: %(default)s)")
    p.add_argument("--close-mosaic", type=int, help="final fine-tune epochs without mosaic (default: half of them)")
    p.add_argument("--img", type=int, default=Budget.img_size)
    p.add_argument("--round-to", type=int, default=8)
    p.add_argument("--reduction", type=float, default=PipelineSettings.reduction,
                   help="allocation target: baseline GMACs / this (the main job's)")
    p.add_argument("--min-channels", type=int, default=PipelineSettings.min_channels,
                   help="no group of the allocated row below this many channels (the main job's)")
    p.add_argument("--scan-images", type=int, default=PipelineSettings.scan_images,
                   help="train images scoring each sensitivity point (the main job's)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--replot", action="store_true", help="only redraw the plot of an existing --out JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs every arm and the control; prints the table and returns what the JSON holds."""
    args = parse_args(argv)
    if args.replot:
        result = json.loads(args.out.read_text())
        print(f"written {plot(result, args.out.with_suffix('.png'))}")
        return result
    started = time.perf_counter()
    baseline, data = resolve_inputs(args)
    budget = budget_of(args)
    control = run_arm(args.work, "control", baseline, data, budget)
    rows: list[dict[str, Any]] = []

    def write() -> dict[str, Any]:
        result = summarise(args, baseline, data, budget, control, rows, time.perf_counter() - started)
        atomic_write_json(result, args.out)
        return result

    taylor_data = _train_split(data)
    for ratio in args.ratios:
        for importance in args.importances:
            rows.append(run_arm(args.work, f"{importance}-r{ratio}", baseline, data, budget,
                                prune_settings=uniform_settings(args, ratio, importance),
                                taylor_data=taylor_data) | {"criterion": importance, "ratio": ratio})
            write()
    if args.distill:
        distilled = run_arm(args.work, "l2-r0.5-distill", baseline, data, budget,
                            prune_settings=uniform_settings(args, 0.5), teacher=baseline)
        rows.append(distilled | {"criterion": "l2+distill", "ratio": 0.5})
        write()
    for ratio in args.compensate_at:
        rows.append(run_arm(args.work, f"l2-r{ratio}-compensated", baseline, data, budget,
                            prune_settings=uniform_settings(args, ratio), compensate=True)
                    | {"criterion": "l2+compensation", "ratio": ratio})
        write()
    if args.allocation:
        rows.extend(allocation_rows(args, baseline, data, budget))
    for ratio in args.allocate_at:
        rows.extend(allocation_at_ratio(args, baseline, data, budget, ratio, rows))
    result = write()
    print_table(result)
    print(f"\nwritten {args.out} and {args.out.with_suffix('.png')} ({result['wall_s']:.0f} s)")
    return result


def budget_of(args: argparse.Namespace) -> Budget:
    """The one fine-tune of every row; without ``--close-mosaic`` its second half has no mosaic."""
    close_mosaic = args.epochs // 2 if args.close_mosaic is None else args.close_mosaic
    return Budget(epochs=args.epochs, img_size=args.img, batch_size=args.batch, nominal_batch=args.batch, hyp=args.hyp,
                  close_mosaic=close_mosaic, workers=args.workers, seed=args.seed)


def resolve_inputs(args: argparse.Namespace) -> tuple[Path, Path]:
    """The baseline and data: given ones, or the shipped baseline and the demo set it was trained on."""
    if args.baseline and args.data:
        return args.baseline, args.data
    from yolo_prune.data.synthetic import make_synthetic_dataset
    from yolo_prune.pipeline import SHIPPED_BASELINE, shipped_baseline_card

    made = shipped_baseline_card()["data"]
    data_yaml = args.data or args.work / "data" / "data.yaml"
    if not data_yaml.exists():
        make_synthetic_dataset(data_yaml.parent, n_train=made["n_train"], n_val=made["n_val"],
                               img_size=made["img_size"], seed=made["seed"], profile=made["profile"])
    return args.baseline or SHIPPED_BASELINE, data_yaml


def allocation_rows(args: argparse.Namespace, baseline: Path, data: Path, budget: Budget) -> list[dict[str, Any]]:
    """The main job's allocated recipe and the uniform ratio of equal GMACs, both fine-tuned with ``budget``.

    The recipe is the main job's (``allocated_arm``), allocated for ``--reduction`` x fewer GMACs.
    """
    from yolo_prune import api
    from yolo_prune.pruning.allocation import Target, uniform_ratio_for_target

    allocated = allocated_arm(args, baseline, data, budget, "allocated", args.work / "sensitivity", args.reduction)
    loaded = api.load(baseline)
    target = Target("gmacs", allocated["gmacs"], EQUAL_GMACS)
    ratio, _ = uniform_ratio_for_target(loaded.model, api.adapter_of(loaded), target, img_size=args.img,
                                        prune_settings={"importance": "l2", "round_to": args.round_to})
    uniform = run_arm(args.work, "uniform-equal-gmacs", baseline, data, budget,
                      prune_settings=uniform_settings(args, ratio))
    if abs(uniform["gmacs"] / allocated["gmacs"] - 1) >= EQUAL_GMACS:  # round_to steps can be coarser than that
        print(f"warning: no uniform ratio reaches the allocated {allocated['gmacs']:.4f} GMACs within {EQUAL_GMACS:.0%} "
              f"(closest: {ratio:g}, {uniform['gmacs']:.4f}); try --round-to 1")
    return [uniform | {"criterion": "uniform (l2)", "ratio": ratio}, allocated | {"criterion": "allocated (l2)", "ratio": None}]


def allocation_at_ratio(args: argparse.Namespace, baseline: Path, data: Path, budget: Budget, ratio: float,
                        rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The allocated recipe for the GMACs of the uniform l2 row at ``ratio`` (and that row, if not run yet).

    Answers "at ratio 0.5, what keeps the most?" at equal compute: the uniform rows of one ratio share
    their MACs, and the allocation chooses per-stage ratios for the same GMACs from the main job's scan.
    """
    from yolo_prune import api
    from yolo_prune.benchmark.stats import model_stats

    new: list[dict[str, Any]] = []
    uniform = next((r for r in rows if r["criterion"] == "l2" and r["ratio"] == ratio), None)
    if uniform is None:
        uniform = run_arm(args.work, f"l2-r{ratio}", baseline, data, budget,
                          prune_settings=uniform_settings(args, ratio)) | {"criterion": "l2", "ratio": ratio}
        new.append(uniform)
    reduction = model_stats(api.load(baseline).model, args.img)["gmacs"] / uniform["gmacs"]
    allocated = allocated_arm(args, baseline, data, budget, f"allocated-r{ratio}", args.work / f"sensitivity-r{ratio}",
                              reduction, scan=args.work / "sensitivity" / "sensitivity.json")
    return new + [allocated | {"criterion": "allocated (l2)", "ratio": None, "gmacs_of_ratio": ratio}]


def uniform_settings(args: argparse.Namespace, ratio: float, importance: str = "l2") -> dict[str, Any]:
    """The prune settings of a row at one ratio for every group."""
    return {"pruning_ratio": ratio, "importance": importance, "round_to": args.round_to, "seed": args.seed}


def allocated_arm(args: argparse.Namespace, baseline: Path, data: Path, budget: Budget, name: str, scan_dir: Path,
                  reduction: float, scan: Path | None = None) -> dict[str, Any]:
    """The main job's l2 allocation for ``reduction`` x fewer GMACs, made in ``scan_dir``, fine-tuned as ``name``.

    Each output-stride stage scanned alone at the main job's scan ratios on the first ``--scan-images``
    unaugmented train images; a finished ``scan`` (the scan of another target: only the allocation
    differs) or a scan already in ``scan_dir`` is reused.
    """
    from yolo_prune import api
    from yolo_prune.pruning.recipe import load_recipe

    recipe = api.stage_allocation(baseline, data, scan_dir, reduction=reduction, ratios=PipelineSettings.scan_ratios,
                                  images=args.scan_images, img_size=args.img, tolerance=REDUCTION_TOLERANCE,
                                  batch_size=budget.batch_size, workers=args.workers, min_channels=args.min_channels,
                                  importance="l2", round_to=args.round_to, scan=scan)
    return run_arm(args.work, name, baseline, data, budget, prune_settings=load_recipe(recipe))


def summarise(args: argparse.Namespace, baseline: Path, data: Path, budget: Budget, control: dict[str, Any],
              rows: list[dict[str, Any]], wall_s: float) -> dict[str, Any]:
    """The JSON: settings, control, rows with retention, and each criterion's margin over random."""
    from yolo_prune.recovery import evaluate_checkpoint

    rows = with_retention(rows, control)
    base = evaluate_checkpoint(baseline, data, budget, stats=True)
    result = {"command": "python scripts/bench_recovery.py " + " ".join(sys.argv[1:]), "baseline": str(baseline),
              "baseline_metrics": base, "data": str(data), "budget": budget.__dict__, "control": control,
              "rows": rows, "vs_random": vs_random(rows), "wall_s": round(wall_s, 1)}
    plot(result, args.out.with_suffix(".png"))
    return result


def vs_random(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """For each criterion and ratio: mAP50-95 points above random at the same ratio (equal MACs).

    An allocation for a ratio's GMACs (``gmacs_of_ratio``) is compared with random at that ratio;
    ``equal_macs`` says whether its GMACs came within 5 % of that row's.
    """
    random = {r["ratio"]: r for r in rows if r["criterion"] == "random"}
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        ratio = r["ratio"] if r["ratio"] is not None else r.get("gmacs_of_ratio")
        ref = random.get(ratio)
        if ref is None or r["criterion"] == "random":
            continue
        equal_macs = abs(r["gmacs"] / ref["gmacs"] - 1) < EQUAL_GMACS
        out.setdefault(r["criterion"], {})[str(ratio)] = {
            "points": round(100 * (r["map50_95"] - ref["map50_95"]), 2), "equal_macs": equal_macs,
            "beats_random": r["map50_95"] > ref["map50_95"]}
    return out


def print_table(result: dict[str, Any]) -> None:
    """Prints the arms against the control (retention) as a table."""
    c = result["control"]
    print(f"baseline mAP50-95 {result['baseline_metrics']['map50_95']:.4f}, {result['baseline_metrics']['gmacs']:.3f} "
          f"GMACs; control (same {result['budget']['epochs']}-epoch fine-tune, unpruned) {c['map50_95']:.4f}")

    def ratio(r: dict[str, Any]) -> Any:  # an allocation for a ratio's GMACs: that ratio in brackets
        if r["ratio"] is not None:
            return r["ratio"]
        if r.get("gmacs_of_ratio"):
            return f"({r['gmacs_of_ratio']})"
        return "-"

    rows = [[r["criterion"], ratio(r), r["gmacs"], r["params_m"], r["latency_ms"], r["map50_95_pruned"],
             r["map50_95"], r["retention"]] for r in result["rows"]]
    print(format_table(rows, ["criterion", "ratio", "GMACs", "params (M)", "CPU ms", "mAP50-95 pruned",
                              "mAP50-95 fine-tuned", "retention"]))
    for criterion, by_ratio in result["vs_random"].items():
        cells = ", ".join(f"r{k}: {v['points']:+.1f} pts" + ("" if v["equal_macs"] else " (GMACs differ by over 5 %)")
                          for k, v in by_ratio.items())
        print(f"{criterion} vs random at the same ratio's MACs: {cells}")


def plot(result: dict[str, Any], path: Path) -> Path:
    """mAP50-95 after fine-tuning against GMACs, one line per criterion; baseline and control marked."""
    from yolo_prune.report.plots import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(7, 4.5))
    criteria = list(dict.fromkeys(r["criterion"] for r in result["rows"]))
    for i, criterion in enumerate(criteria):  # wide to narrow, varied dashes: equal rows stay visible
        pts = sorted((r["gmacs"], r["map50_95"]) for r in result["rows"] if r["criterion"] == criterion)
        ax.plot(*zip(*pts, strict=True), marker="osD^vPX*"[i % 8], ls=("-", "--", ":", "-.")[i % 4],
                lw=2.6 - 1.6 * i / max(len(criteria) - 1, 1), ms=8 - 4 * i / max(len(criteria) - 1, 1),
                label=criterion)
    base = result["baseline_metrics"]
    ax.scatter([base["gmacs"]], [base["map50_95"]], marker="*", s=150, color="black", zorder=5, label="baseline")
    control = result["control"]["map50_95"]
    ax.axhline(control, color="grey", ls="--", label="control (unpruned, same fine-tune)")
    ys = [r["map50_95"] for r in result["rows"]] + [base["map50_95"], control]
    pad = 0.05 * (max(ys) - min(ys))  # the control line must not sit on the frame
    ax.set_ylim(min(ys) - pad, max(ys) + pad)
    ax.set_xlabel("GMACs per image (at the training size)")
    ax.set_ylabel("mAP50-95 after fine-tuning")
    ax.set_title(f"Recovery after {result['budget']['epochs']} fine-tune epochs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def _train_split(data: Path) -> tuple[Path, Path]:
    from yolo_prune.data import load_data_config

    cfg = load_data_config(data)
    return cfg.train_images, cfg.train_ann


if __name__ == "__main__":
    main()
