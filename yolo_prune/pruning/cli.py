"""``yolo-prune prune`` / ``scripts/prune.py``: arguments -> one ``prune`` call -> report."""
from __future__ import annotations

import argparse
import io
import warnings
from pathlib import Path
from typing import Any

import torch

from yolo_prune.cli import add_model_source_args
from yolo_prune import api
from yolo_prune.io import atomic_write_json
from yolo_prune.pruning.importance import IMPORTANCES
from yolo_prune.reporting import format_table


def add_prune_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the prune flags to ``parser`` (shared by the script and the CLI)."""
    add_model_source_args(parser.add_argument_group("model"),
                          weights_help="checkpoint to prune (official YOLOv7 or ultralytics .pt)",
                          cfg_help="model cfg: builds a random model when --weights is absent, "
                                   "or gives the architecture of a bare state dict")
    how = parser.add_argument_group("pruning")
    how.add_argument("--ratio", "--pruning-ratio", type=float, default=0.5,
                     help="fraction of channels to remove, in [0, 1) (the API's pruning_ratio)")
    how.add_argument("--importance", default="l2", help=f"criterion: {', '.join(IMPORTANCES.names())}")
    how.add_argument("--global", dest="global_pruning", action="store_true", help="rank channels globally")
    how.add_argument("--round-to", type=int, default=None, help="keep channel counts multiples of this")
    how.add_argument("--max-ratio", type=float, default=1.0, help="no layer loses more than this fraction")
    how.add_argument("--layer-ratio", action="append", default=[], metavar="GLOB=RATIO",
                     help="per-layer ratio by module-name glob, e.g. 'model.77*=0.2' (repeatable)")
    how.add_argument("--recipe", help="prune recipe yaml, or a name in configs/prune/ (replaces the ratio flags)")
    how.add_argument("--steps", type=int, default=1,
                     help="reach the ratio in this many steps (with --data: a short fine-tune between steps)")
    how.add_argument("--data", type=Path, help="data yaml: iterative pruning fine-tunes on it between --steps")
    how.add_argument("--epochs-per-step", type=int, default=1, help="fine-tune epochs after each step (with --data)")
    how.add_argument("--mode", choices=("channel", "unstructured"), default="channel",
                     help="channel: remove whole channels; unstructured: zero single weights "
                          "(a contrast: dense hardware does not get faster)")
    how.add_argument("--sparsity", type=float, default=0.5, help="fraction of weights zeroed (--mode unstructured)")
    how.add_argument("--scope", choices=("layer", "global"), default="layer",
                     help="unstructured: the same sparsity per layer, or one global threshold")
    how.add_argument("--img", "--img-size", type=int, default=640, help="input size for tracing, MACs and latency")
    how.add_argument("--device", default="cpu", help="where the latency is measured: cpu, 0, cuda:1 (pruning itself "
                                                     "runs on the CPU)")
    how.add_argument("--seed", type=int, default=0)
    how.add_argument("--dry-run", action="store_true", help="list the pruning groups, change nothing")
    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, help="pruned checkpoint path (default: beside --weights, *-pruned.pt)")
    out.add_argument("--force", action="store_true", help="overwrite an existing --out")
    out.add_argument("--no-latency", action="store_true", help="skip the CPU latency measurement")
    return parser


def parse_layer_ratios(items: list[str]) -> dict[str, float]:
    """``['model.7*=0.2']`` -> ``{'model.7*': 0.2}`` with a clear error on a malformed item."""
    ratios = {}
    for item in items:
        pattern, sep, value = item.rpartition("=")
        try:
            ratios[pattern] = float(value)
        except ValueError:
            sep = ""
        if not sep or not pattern:
            raise ValueError(f"--layer-ratio {item!r} must look like GLOB=RATIO, e.g. 'model.77*=0.2'")
    return ratios


def resolve_out_path(args: argparse.Namespace) -> Path:
    """The output path, refusing to overwrite the input or (without --force) anything else."""
    if args.out is not None:
        out = args.out
    elif args.weights is not None:
        out = args.weights.with_name(f"{args.weights.stem}-pruned{int(round(args.ratio * 100))}.pt")
    else:
        out = Path("runs/prune") / f"{Path(str(args.cfg)).stem}-pruned{int(round(args.ratio * 100))}.pt"
    if args.weights is not None and out.resolve() == args.weights.resolve():
        raise ValueError(f"--out {out} is the input checkpoint; inputs are never overwritten, choose another path")
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} already exists; pass --force to overwrite it or choose another --out")
    return out


def prune_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``prune_model`` keyword arguments from the flags; a ``--recipe`` overrides the ratio flags."""
    settings = dict(importance=args.importance, pruning_ratio=args.ratio, global_pruning=args.global_pruning,
                    layer_ratios=parse_layer_ratios(args.layer_ratio), max_pruning_ratio=args.max_ratio,
                    round_to=args.round_to, iterative_steps=args.steps, seed=args.seed)
    if args.recipe:
        from yolo_prune.pruning.recipe import load_recipe

        settings.update(load_recipe(args.recipe))
    return settings


def run_prune(args: argparse.Namespace) -> dict[str, Any]:
    """Runs the prune job described by ``args``; returns the JSON report."""
    if args.weights is not None and not args.weights.is_file():
        raise FileNotFoundError(f"--weights {args.weights} does not exist")
    settings = prune_settings(args)
    out = None if args.dry_run else resolve_out_path(args)
    loaded = api.load(args.weights, cfg=args.cfg, family=args.family, trust=args.trust_checkpoint)
    before = describe_model(loaded, args.img, measure=not args.no_latency, file=args.weights, device=args.device)
    if args.mode == "unstructured":
        return _run_unstructured(args, loaded, out, before)
    if args.data is not None and not args.dry_run:
        return _run_iterative(args, loaded, out, before, settings)
    with warnings.catch_warnings():  # _finish prints the same note as one line
        warnings.simplefilter("ignore", api.PrunedCfgWarning)
        result = api.prune(loaded, img_size=args.img, dry_run=args.dry_run, **settings)
    if args.dry_run:
        print(format_groups(result.groups))
        return result.summary()
    return _finish(args, loaded, out, before, result.summary())


def _finish(args: argparse.Namespace, loaded, out: Path, before: dict[str, Any], summary: dict[str, Any]) -> dict:
    """Saves the pruned model, its cfg (where the family's cfg can describe it) and its JSON
    report; prints the before/after table and how the family's own trainer keeps the widths."""
    api.save(loaded, out)
    cfg_path = api.save_cfg(loaded, out.with_suffix(".yaml"))
    if cfg_path is None:
        out.with_suffix(".yaml").unlink(missing_ok=True)  # an earlier run's cfg would describe another model
    after = describe_model(loaded, args.img, measure=not args.no_latency, file=out, device=args.device)
    report = {**summary, "weights": args.weights, "cfg": args.cfg, "out": out, "model_cfg": cfg_path,
              "before": before, "after": after}
    atomic_write_json(report, out.with_suffix(".json"))
    print(format_comparison({"original": before, "pruned": after}))
    print(f"\nsaved {out} (report: {out.with_suffix('.json')}" + (f", cfg: {cfg_path})" if cfg_path else ")"))
    adapter = api.adapter_of(loaded)
    print(f"to train it further: {adapter.own_trainer_hint(True)}" if cfg_path else
          f"warning: {api.cfg_note(loaded)}")
    return report


def _run_unstructured(args: argparse.Namespace, loaded, out: Path | None, before: dict[str, Any]) -> dict:
    """Zeroes single weights (made permanent): same shapes, same MACs - the contrast mode."""
    from yolo_prune.pruning.unstructured import unstructured_prune

    if args.dry_run:
        raise ValueError("--dry-run lists channel groups; it does not apply to --mode unstructured")
    adapter = api.adapter_of(loaded)
    report = unstructured_prune(loaded.model, adapter, args.sparsity, scope=args.scope, img_size=args.img)
    loaded.meta["pruning"] = {"mode": "unstructured", "sparsity": args.sparsity, "scope": args.scope}
    return _finish(args, loaded, out, before, {"unstructured": report})


def _run_iterative(args: argparse.Namespace, loaded, out: Path, before: dict[str, Any],
                   settings: dict[str, Any]) -> dict:
    """Prunes in ``--steps`` rounds with ``--epochs-per-step`` of fine-tuning on ``--data`` between them."""
    from yolo_prune.pruning.iterative import run_iterative

    steps = settings.pop("iterative_steps")
    run_dir = out.with_suffix("")
    result = run_iterative(loaded, data=args.data, steps=steps, epochs_per_step=args.epochs_per_step,
                           out_dir=run_dir, img_size=args.img, prune_kwargs=settings, workers=2)
    return _finish(args, loaded, out, before, {"iterative": result.to_dict(), "run_dir": run_dir})


def describe_model(loaded, img_size: int, *, measure: bool = True, file: Path | None = None,
                   device: str = "cpu") -> dict[str, Any]:
    """Params, GMACs, sizes and, when ``measure``, fused batch-1 latency of a model.

    ``file_mib`` is the size of ``file`` as it is; ``fp16_mib`` that of the weights in float16,
    which compares models of one precision (an Ultralytics release is float16, a file saved
    here float32; YOLOv7 files are float16 both).
    """
    sizes = {"file_mib": file.stat().st_size / 2**20 if file is not None else None,
             "fp16_mib": _fp16_size_mib(loaded.model), "family": loaded.family}
    if not measure:
        from yolo_prune.benchmark import model_stats

        return {**model_stats(loaded.model, img_size), **sizes}
    from yolo_prune.engine.distributed import select_device

    stats = api.benchmark(loaded, img_size, batch=1, warmup=2, runs=5, nms=False, device=select_device(device))
    return {"params_m": stats["params_m"], "gmacs": stats["gmacs"], **sizes,
            "latency_ms": stats["latency"]["latency_ms_median"]}


def _fp16_size_mib(model: torch.nn.Module) -> float:
    buffer = io.BytesIO()
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}, buffer)
    return buffer.tell() / 2**20


def format_comparison(models: dict[str, dict[str, Any]]) -> str:
    """The before/after table: one row per model, ratios against the first."""
    first = next(iter(models.values()))
    rows = []
    for name, s in models.items():
        speedup = (first.get("latency_ms") or 0) / s["latency_ms"] if s.get("latency_ms") else None
        rows.append([name, s["params_m"], s["gmacs"], first["gmacs"] / s["gmacs"], s["fp16_mib"],
                     s.get("latency_ms"), speedup])
    return format_table(rows, ["model", "params (M)", "GMACs", "MACs x", "fp16 size (MiB)", "CPU ms", "speed-up"])


def format_groups(groups) -> str:
    rows = [[g.root, g.channels, g.pruned, ", ".join(g.layers)] for g in groups]
    return format_table(rows, ["group root", "channels", "would lose", "coupled layers"])
