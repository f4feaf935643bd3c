"""``yolo-prune predict`` / ``export`` / ``benchmark``: flags -> one library call each -> printout."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from yolo_prune.cli.common import add_model_source_args, add_project_args, project_folder
from yolo_prune.io.atomic import atomic_write_json
from yolo_prune.settings import check_value

PREDICT_OUT = Path("runs/predict/exp")

EXPORTED_SUFFIXES = (".onnx", ".xml", ".engine")


# -- predict ---------------------------------------------------------------------------------
def add_predict_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the predict flags to ``parser``."""
    add_model_source_args(parser.add_argument_group("model"),
                          weights_help="checkpoint (.pt, either family) or exported model (.onnx, .xml, .engine)",
                          cfg_help="model cfg: a random model when --weights is absent (pipeline checks)")
    src = parser.add_argument_group("input")
    src.add_argument("--source", nargs="+", required=True, help="images, folders, globs ('imgs/*.jpg') or videos")
    run = parser.add_argument_group("inference")
    run.add_argument("--img", "--img-size", dest="img_size", type=int,
                     help="square input side (default 640, or the exported model's)")
    run.add_argument("--conf-thres", type=float, default=0.25, help="keep detections scoring above this")
    run.add_argument("--iou-thres", type=float, default=0.45, help="NMS IoU threshold")
    run.add_argument("--classes", type=int, nargs="+", help="keep only these class indices")
    run.add_argument("--max-det", type=int, default=300, help="detections kept per image")
    run.add_argument("--device", default="", help="torch device for .pt models: '' (auto), cpu, 0 or cuda:0")
    run.add_argument("--half", action="store_true", help="fp16 inference (CUDA, .pt models)")
    run.add_argument("--threads", type=int, help="CPU threads (default: all cores this process may use)")
    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, help=f"output folder (default: {PREDICT_OUT})")
    add_project_args(out, default=PREDICT_OUT, what="results go into")
    out.add_argument("--save-txt", action="store_true", help="YOLO-format labels/<stem>.txt (class cx cy w h score)")
    out.add_argument("--save-json", action="store_true", help="COCO-format predictions.json")
    out.add_argument("--no-save", action="store_true", help="do not write annotated images / videos")
    return parser


def run_predict(args: argparse.Namespace) -> dict[str, Any]:
    """Predicts on ``args.source``; prints what was written."""
    from yolo_prune.deploy.predict import Detector, predict

    _check_thresholds(args)
    settings = {"conf_thres": args.conf_thres, "iou_thres": args.iou_thres, "classes": args.classes,
                "max_det": args.max_det}
    if args.weights is not None and args.weights.suffix in EXPORTED_SUFFIXES:
        detector = Detector.from_export(args.weights, img_size=args.img_size, threads=args.threads, **settings)
    else:
        from yolo_prune.devices import select_device

        detector = Detector.from_model(_load(args), img_size=args.img_size or 640, device=select_device(args.device),
                                       half=args.half, threads=args.threads, **settings)
    result = predict(detector, args.source, project_folder(args, PREDICT_OUT), save_images=not args.no_save, save_txt=args.save_txt,
                     save_json=args.save_json)
    print(f"{result.images} images, {result.videos} videos ({result.frames} frames): {result.detections} "
          f"detections; results in {result.out_dir}")
    return result.summary()


# -- export ----------------------------------------------------------------------------------
def add_export_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the export flags to ``parser``."""
    from yolo_prune.deploy.export import DEFAULT_OPSET, EXPORT_FORMATS

    add_model_source_args(parser.add_argument_group("model"), weights_help="checkpoint to export (either family)",
                          cfg_help="model cfg: exports a random model when --weights is absent")
    fmt = parser.add_argument_group("format")
    fmt.add_argument("--format", nargs="+", default=["onnx"], choices=tuple(EXPORT_FORMATS),
                     help="one or more of onnx, openvino (IR), tensorrt (needs CUDA + TensorRT)")
    fmt.add_argument("--img-size", type=int, default=640, help="square input side")
    fmt.add_argument("--batch", "--batch-size", dest="batch", type=int, default=1, help="batch size of the graph")
    fmt.add_argument("--dynamic-batch", action="store_true", help="leave the batch dimension free")
    fmt.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset")
    fmt.add_argument("--no-simplify", action="store_true", help="skip onnxslim simplification")
    fmt.add_argument("--half", action="store_true", help="fp16 weights, inputs and outputs")
    nms = parser.add_argument_group("NMS in the graph (end-to-end output [K, 7])")
    nms.add_argument("--nms", action="store_true", help="put NMS inside the graph")
    nms.add_argument("--conf-thres", type=float, default=0.25, help="NMS score threshold")
    nms.add_argument("--iou-thres", type=float, default=0.45, help="NMS IoU threshold")
    nms.add_argument("--max-det", type=int, default=100, help="detections kept per image and class")
    check = parser.add_argument_group("verification against PyTorch")
    check.add_argument("--no-verify", action="store_true", help="skip the comparison (not recommended)")
    check.add_argument("--verify-images", nargs="+", default=[], help="real images to compare on "
                                                                       "(default: a synthetic scene)")
    check.add_argument("--tolerance", type=float, help="largest accepted difference (default 1e-3; 2e-2 with --half)")
    check.add_argument("--threads", type=int, help="runtime threads during verification")
    parser.add_argument("--out", type=Path, help="output file of the first format (default: beside --weights)")
    return parser


def run_export(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Exports to every ``--format``; prints each check and writes ``<out>.export.json``."""
    from yolo_prune.deploy.export import EXPORT_FORMATS, export_model

    _check_thresholds(args)
    loaded = _load(args)
    base = args.out or _default_export_path(args)
    summaries = []
    for fmt in args.format:
        path = base.with_suffix(EXPORT_FORMATS[fmt])
        result = export_model(loaded, path, format=fmt, img_size=args.img_size, batch=args.batch,
                              dynamic_batch=args.dynamic_batch, opset=args.opset, simplify=not args.no_simplify,
                              half=args.half, nms=args.nms, conf_thres=args.conf_thres, iou_thres=args.iou_thres,
                              max_det=args.max_det, verify=not args.no_verify, verify_images=args.verify_images,
                              tolerance=args.tolerance, threads=args.threads)
        for c in result.checks:
            count = f", {c.detections_export} detections" if c.detections_export is not None else ""
            print(f"{fmt} vs torch on {c.input} (batch {c.batch}, {c.runtime}): max abs diff "
                  f"{c.max_abs_diff_boxes_px:.3g} px boxes, {c.max_abs_diff_scores:.3g} scores{count}: "
                  f"{'ok' if c.passed else 'FAILED'} (tolerance {c.tolerance:g})")
        print(f"wrote {result.path}" + ("" if result.checks else " (not verified)"))
        summaries.append(result.summary())
    atomic_write_json({"weights": str(args.weights) if args.weights else None, "cfg": args.cfg,
                       "exports": summaries}, base.with_name(base.stem + ".export.json"))
    return summaries


def _default_export_path(args: argparse.Namespace) -> Path:
    if args.weights is not None:
        return args.weights.with_suffix(".onnx")
    return Path("runs/export") / f"{Path(str(args.cfg)).stem}.onnx"


# -- benchmark -------------------------------------------------------------------------------
def add_benchmark_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the A/B latency flags to ``parser``."""
    from yolo_prune.deploy.runtimes import RUNTIMES

    models = parser.add_argument_group("models (timed in one process, interleaved)")
    models.add_argument("--original", type=Path, required=True, help="model A: .pt, or an exported file")
    models.add_argument("--pruned", type=Path, required=True, help="model B: .pt, or an exported file")
    models.add_argument("--trust-checkpoint", dest="trust", action="store_true", help="allow pickled code (files you trust)")
    run = parser.add_argument_group("measurement")
    run.add_argument("--runtime", nargs="+", choices=RUNTIMES, help="default: torch, onnxruntime and, when "
                                                                    "installed, openvino")
    run.add_argument("--batch", "--batch-size", dest="batch", type=int, nargs="+", default=[1],
                     help="batch sizes, e.g. 1 8")
    run.add_argument("--threads", type=int, help="CPU threads (default: all cores this process may use)")
    run.add_argument("--img-size", type=int, default=640, help="square input side")
    run.add_argument("--warmup", type=int, default=3, help="untimed forwards of each model first")
    run.add_argument("--rounds", type=int, default=20, help="timed forwards of each model")
    run.add_argument("--device", default="cpu", help="torch device for the torch runtime")
    parser.add_argument("--out", type=Path, help="write every comparison to this JSON")
    return parser


def run_benchmark(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Compares the two models on every runtime and batch size; prints one line each."""
    import tempfile

    from yolo_prune.deploy.ab import compare_latency, format_comparison
    from yolo_prune.deploy.runtimes import missing_runtime

    runtimes = args.runtime or [r for r in ("torch", "onnxruntime", "openvino") if missing_runtime(r) is None]
    models = [_load_benchmark_model(p, bool(args.trust)) for p in (args.original, args.pruned)]
    results = []
    with tempfile.TemporaryDirectory(prefix="yolo-prune-bench-") as workdir:  # exports shared by the runtimes
        for runtime in runtimes:
            for batch in args.batch:
                result = compare_latency(*models, runtime=runtime, img_size=args.img_size, batch=batch,
                                         threads=args.threads, warmup=args.warmup, rounds=args.rounds,
                                         device=args.device, workdir=workdir)
                print(format_comparison(result), flush=True)
                results.append(result)
    if args.out:
        atomic_write_json({"original": str(args.original), "pruned": str(args.pruned), "results": results}, args.out)
        print(f"wrote {args.out}")
    return results


def _load_benchmark_model(path: Path, trust: bool) -> Any:
    if path.suffix in EXPORTED_SUFFIXES:
        return path
    from yolo_prune import api

    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; pass a checkpoint (.pt) or an exported model")
    return api.load(path, trust=trust)


# -- shared ----------------------------------------------------------------------------------
def _load(args: argparse.Namespace) -> Any:
    from yolo_prune import api

    if args.weights is None and args.cfg is None:
        raise ValueError("pass --weights model.pt (or --cfg to try a random model)")
    if args.weights is not None and not args.weights.is_file():
        raise FileNotFoundError(f"--weights {args.weights} does not exist; check the path")
    return api.load(args.weights, cfg=args.cfg, family=args.family, trust=bool(args.trust))


def _check_thresholds(args: argparse.Namespace) -> None:
    """NMS settings by the rules every job's settings follow (``FIELD_RULES``), before any model loads."""
    for name in ("conf_thres", "iou_thres", "max_det"):
        check_value(name, getattr(args, name))
