"""``yolo-prune eval`` / ``scripts/evaluate.py``: COCO mAP, speed and size of a checkpoint."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from yolo_prune.cli import add_model_source_args
from yolo_prune.evaluation.coco_eval import COCO_BACKENDS
from yolo_prune.io.atomic import atomic_write_json
from yolo_prune.reporting import format_table


def add_eval_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the evaluation flags to ``parser`` (shared by the script and the CLI)."""
    src = parser.add_argument_group("model")
    add_model_source_args(src, weights_help="checkpoint to evaluate (YOLOv7 or Ultralytics .pt)",
                          cfg_help="model cfg: a random model when --weights is absent (pipeline checks)")
    data = parser.add_argument_group("data")
    data.add_argument("--data", type=Path, help="data.yaml (COCO-format dataset)")
    data.add_argument("--split", default="val", choices=("train", "val", "test"), help="split of --data")
    data.add_argument("--ann", type=Path, help="COCO annotation json (instead of --data)")
    data.add_argument("--images", type=Path, help="image folder of --ann")
    run = parser.add_argument_group("evaluation")
    run.add_argument("--img", "--img-size", type=int, default=640, help="inference size (long side, pixels)")
    run.add_argument("--batch", "--batch-size", type=int, default=16, help="batch size")
    run.add_argument("--conf", "--conf-thres", type=float, default=0.001, help="NMS confidence threshold")
    run.add_argument("--iou", "--iou-thres", type=float, default=0.65, help="NMS IoU threshold")
    run.add_argument("--max-det", type=int, default=300, help="detections kept per image")
    run.add_argument("--device", default="", help="'' (auto), cpu, 0 or cuda:0")
    run.add_argument("--half", action="store_true", help="fp16 inference (CUDA only)")
    run.add_argument("--backend", default="faster_coco_eval", help=f"metric backend: {', '.join(COCO_BACKENDS)}")
    run.add_argument("--workers", type=int, default=2, help="data loader processes")
    run.add_argument("--max-images", type=int, help="evaluate only the first N images")
    run.add_argument("--no-fuse", action="store_true", help="evaluate the model without Conv+BN fusion")
    run.add_argument("--bench-runs", type=int, default=20, help="latency runs (0: skip the latency benchmark)")
    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, help="metrics JSON path (default: beside --weights, *-eval.json)")
    out.add_argument("--project", type=Path, help="as official test.py: write PROJECT/NAME/metrics.json (instead of --out)")
    out.add_argument("--name", default="exp", help="run name under --project (default %(default)s)")
    out.add_argument("--exist-ok", action="store_true", help="write into an existing --project/--name folder")
    out.add_argument("--save-results", type=Path, help="also write the COCO detections json here")
    return parser


def _dataset_paths(args: argparse.Namespace) -> tuple[Path, Path]:
    from yolo_prune.data import load_data_config

    if args.data is not None:
        return load_data_config(args.data).split(args.split)
    if args.ann is None or args.images is None:
        raise ValueError("pass --data data.yaml, or both --ann instances.json and --images DIR")
    return args.images, args.ann


def _load_model(args: argparse.Namespace, nc: int) -> Any:
    from yolo_prune import api

    if args.weights is None and args.cfg is None:
        raise ValueError("pass --weights model.pt (or --cfg to check the pipeline on a random model)")
    if args.weights is not None and not args.weights.is_file():
        raise FileNotFoundError(f"--weights {args.weights} does not exist")
    return api.load(args.weights, cfg=args.cfg, family=args.family, trust=args.trust_checkpoint,
                    nc=nc if args.weights is None else None)


def run_eval(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluates the model of ``args``; prints a table and writes the metrics JSON."""
    from yolo_prune import api
    from yolo_prune.benchmark import measure_latency, model_stats
    from yolo_prune.data.config import names_from_coco_json
    from yolo_prune.engine.distributed import select_device

    images, ann = _dataset_paths(args)
    device = select_device(args.device)
    loaded = _load_model(args, nc=len(names_from_coco_json(ann)))
    metrics = api.evaluate(loaded, images, ann, img_size=args.img, batch_size=args.batch, fuse=not args.no_fuse,
                           conf_thres=args.conf, iou_thres=args.iou, max_det=args.max_det, device=device,
                           half=args.half, backend=args.backend, workers=args.workers,
                           max_images=args.max_images, results_path=args.save_results)
    report = {"weights": str(args.weights) if args.weights else None, "cfg": args.cfg, "data": str(args.data or ann),
              "split": args.split if args.data else None, "img_size": args.img, "fused": not args.no_fuse,
              "metrics": {k: v for k, v in metrics.items() if k != "settings"}, "settings": metrics["settings"],
              "model": model_stats(loaded.model, args.img),  # unfused, as in the prune report
              "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    if args.bench_runs > 0:
        fuse = None if args.no_fuse else api.adapter_of(loaded).fuse
        report["latency"] = measure_latency(loaded.model, args.img, batch=1, device=device, fuse=fuse,
                                            half=args.half and device.type == "cuda", runs=args.bench_runs)
    if args.out is not None and args.project is not None:
        raise ValueError("pass either --out or --project/--name, not both")
    out = args.out or _default_out(args)
    atomic_write_json(report, out)
    print(format_eval_report(report))
    print(f"\nwrote {out}")
    return report


def _default_out(args: argparse.Namespace) -> Path:
    if args.project is not None:
        run_dir = args.project / args.name
        if (run_dir / "metrics.json").exists() and not args.exist_ok:
            raise FileExistsError(f"{run_dir} already holds metrics.json; pass --exist-ok or choose another --name")
        return run_dir / "metrics.json"
    if args.weights is not None:
        return args.weights.with_name(args.weights.stem + "-eval.json")
    return Path("runs/eval") / f"{Path(str(args.cfg)).stem}-eval.json"


def format_eval_report(report: dict[str, Any]) -> str:
    """Summary line table plus the per-class AP table."""
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

