"""Interleaved A/B latency: is the pruned model faster on the runtime it is deployed to?

Two figures measured minutes apart on a shared machine differ by more than pruning changes
them. So the original (A) and the pruned model (B) are timed **in one process, in alternating
order** (A B, B A, A B, ...): machine noise falls on both alike, and each round gives one paired
ratio ``t_A / t_B``. The speed-up is the median of those ratios, its spread their 10th-90th
percentiles; when that spread contains 1.0 the speed-up is reported as not significant.

What is timed: the model's forward on a prepared input (no letterbox, no NMS), per image
(a run's time / batch). On CUDA, torch forwards are timed with CUDA events.
"""
from __future__ import annotations

import contextlib
import importlib
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from yolo_prune.adapters.base import LoadedModel
from yolo_prune.benchmark.latency import _device_name, torch_threads
from yolo_prune.benchmark.stats import model_stats
from yolo_prune.settings import IMG_SIZE

Model = LoadedModel | str | Path
RUNTIME_FILE_SUFFIXES = {"onnxruntime": (".onnx",), "openvino": (".xml", ".onnx"), "tensorrt": (".engine",)}


def compare_latency(original: Model, pruned: Model, *, runtime: str = "onnxruntime", img_size: int = IMG_SIZE,
                    batch: int = 1, threads: int | None = None, warmup: int = 3, rounds: int = 20,
                    device: str | torch.device = "cpu", workdir: str | Path | None = None,
                    runtime_settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Times ``original`` and ``pruned`` interleaved on ``runtime``; returns figures and conditions.

    Args:
        original: Loaded model (exported here when ``runtime`` needs a file) or a file already
            exported for ``runtime`` (``.onnx``, ``.xml``, ``.engine``).
        pruned: The same for the pruned model.
        runtime: ``torch`` (eager, fused, channels_last), ``onnxruntime``, ``openvino`` or
            ``tensorrt`` (settings in ``yolo_prune.deploy.runtimes``).
        img_size: Square input side.
        batch: Images per forward.
        threads: CPU threads of the runtime (default: the cores this process may use).
        warmup: Untimed forwards of each model first.
        rounds: Timed forwards of each model (one paired ratio per round).
        device: Torch device, for the ``torch`` runtime.
        workdir: Where exports are written (OpenVINO compiles the ONNX export directly: the same
            graph its IR would hold); one already there under the same name
            (``original-b1.onnx``) is reused, so pass a fresh folder per pair of models.
        runtime_settings: Overrides of the runner's defaults (``OnnxRuntimeRunner``:
            ``optimization``, ``spinning``; ``TorchRunner``: ``channels_last``), for studies.

    Returns:
        ``runtime, runtime_version, device, threads, batch, img_size, warmup, rounds, order,
        timed, runtime_settings``; ``original`` and ``pruned``: ``latency_ms_median,
        latency_ms_p10, latency_ms_p90, fps, gmacs`` (None for files), ``source``;
        ``speedup_median, speedup_p10, speedup_p90`` (paired t_original / t_pruned),
        ``significant`` (the 10-90 % spread excludes 1.0), ``macs_reduction`` and
        ``speedup_per_macs_reduction`` (None unless both MACs are known).
    """
    from yolo_prune.deploy.runtimes import default_threads, require_runtime

    if rounds < 2 or warmup < 0 or batch < 1:
        raise ValueError(f"need rounds >= 2, warmup >= 0 and batch >= 1 (got {rounds}, {warmup}, {batch})")
    require_runtime(runtime)
    threads = threads or default_threads()
    with _workdir(workdir) as folder:
        prepared = [_prepare(m, label, runtime, img_size=img_size, batch=batch, threads=threads, device=device,
                             folder=folder, settings=runtime_settings or {})
                    for m, label in ((original, "original"), (pruned, "pruned"))]
        seconds = time_interleaved([p["run"] for p in prepared], warmup=warmup, rounds=rounds,
                                   timer=prepared[0]["timer"])
    return _result(prepared, seconds, runtime=runtime, threads=threads, batch=batch, img_size=img_size,
                   warmup=warmup, rounds=rounds)


def _result(prepared: list[dict[str, Any]], seconds: np.ndarray, *, runtime: str, threads: int, batch: int,
            img_size: int, warmup: int, rounds: int) -> dict[str, Any]:
    """The figures and conditions of one interleaved comparison (see ``compare_latency``)."""
    speedup = speedup_summary(seconds[:, 0], seconds[:, 1])
    gmacs = [p["gmacs"] for p in prepared]
    macs_reduction = gmacs[0] / gmacs[1] if None not in gmacs and gmacs[1] else None
    result: dict[str, Any] = {
        "runtime": runtime, "runtime_version": _runtime_version(runtime), "device": prepared[0]["device"],
        "threads": threads, "batch": batch, "img_size": img_size, "warmup": warmup, "rounds": rounds,
        "order": "interleaved, alternating A B / B A per round, one process",
        "timed": "model forward on a prepared input, per image (no letterbox, no NMS)",
        "runtime_settings": prepared[0]["settings"],
        **speedup, "macs_reduction": macs_reduction,
        "speedup_per_macs_reduction": speedup["speedup_median"] / macs_reduction if macs_reduction else None,
    }
    for (label, column), p in zip((("original", 0), ("pruned", 1)), prepared, strict=False):
        result[label] = {**latency_summary(seconds[:, column], batch), "gmacs": p["gmacs"], "source": p["source"]}
    return result


def speedup_summary(seconds_a: Sequence[float], seconds_b: Sequence[float]) -> dict[str, float | bool]:
    """Paired speed-up of B over A: per-round ``t_A / t_B``, its median and 10th / 90th percentiles.

    ``significant`` is False when the 10-90 % spread contains 1.0 (no speed-up one could rely on).
    """
    ratios = np.asarray(seconds_a, dtype=np.float64) / np.asarray(seconds_b, dtype=np.float64)
    p10, median, p90 = (float(v) for v in np.percentile(ratios, [10, 50, 90]))
    return {"speedup_median": median, "speedup_p10": p10, "speedup_p90": p90, "significant": not p10 <= 1.0 <= p90}


def latency_summary(seconds: Sequence[float], batch: int = 1) -> dict[str, float]:
    """Median, 10th and 90th percentile per image in ms, and the FPS of the median."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0 / batch
    p10, median, p90 = (float(v) for v in np.percentile(ms, [10, 50, 90]))
    return {"latency_ms_median": median, "latency_ms_p10": p10, "latency_ms_p90": p90,
            "fps": 1000.0 / median if median > 0 else float("inf")}


def time_interleaved(runs: Sequence[Callable[[], None]], *, warmup: int = 3, rounds: int = 20,
                     timer: Callable[[Callable[[], None]], float] | None = None) -> np.ndarray:
    """Seconds ``[rounds, len(runs)]``: every run once per round, the order reversed every other round.

    Args:
        runs: One forward each (inputs already prepared).
        warmup: Untimed calls of each run first.
        rounds: Timed rounds.
        timer: ``timer(run) -> seconds`` (default: wall clock around the call).
    """
    timer = timer or _wall_clock
    for run in runs:
        for _ in range(warmup):
            run()
    seconds = np.zeros((rounds, len(runs)))
    for r in range(rounds):
        order = range(len(runs)) if r % 2 == 0 else reversed(range(len(runs)))
        for i in order:
            seconds[r, i] = timer(runs[i])
    return seconds


def format_comparison(result: dict[str, Any]) -> str:
    """One line: runtime, conditions, both latencies with their spread, the speed-up and its verdict."""
    a, b = result["original"], result["pruned"]
    verdict = "" if result["significant"] else "  (not significant: the spread overlaps 1.0)"
    macs = ""
    if result["macs_reduction"]:
        macs = (f" for {result['macs_reduction']:.2f}x fewer MACs "
                f"({result['speedup_per_macs_reduction']:.2f} of it)")
    return (f"{result['runtime']:<11} batch {result['batch']}, {result['threads']} threads: "
            f"{a['latency_ms_median']:.1f} ms [{a['latency_ms_p10']:.1f}-{a['latency_ms_p90']:.1f}] -> "
            f"{b['latency_ms_median']:.1f} ms [{b['latency_ms_p10']:.1f}-{b['latency_ms_p90']:.1f}], speed-up "
            f"{result['speedup_median']:.2f}x [{result['speedup_p10']:.2f}-{result['speedup_p90']:.2f}]{macs}{verdict}")


def _wall_clock(run: Callable[[], None]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def _cuda_events(run: Callable[[], None]) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    run()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1000.0


@contextlib.contextmanager
def _workdir(workdir: str | Path | None) -> Iterator[Path]:
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
        yield Path(workdir)
        return
    with tempfile.TemporaryDirectory(prefix="yolo-prune-ab-") as tmp:
        yield Path(tmp)


def _prepare(model: Model, label: str, runtime: str, *, img_size: int, batch: int, threads: int,
             device: str | torch.device, folder: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """``run`` (one forward), ``timer``, ``gmacs``, ``device``, ``settings`` and ``source`` of one model."""
    from yolo_prune.deploy.export import export_model, export_module
    from yolo_prune.deploy.runtimes import TorchRunner, make_runner

    gmacs = model_stats(model.model, img_size)["gmacs"] if isinstance(model, LoadedModel) else None
    source = str(model.source) if isinstance(model, LoadedModel) else str(model)
    x = np.random.default_rng(0).random((batch, 3, img_size, img_size), dtype=np.float32)
    if runtime == "torch":
        if not isinstance(model, LoadedModel):
            raise ValueError(f"the torch runtime times a loaded model, not the file {model}; pass the checkpoint")
        runner = TorchRunner(export_module(model), threads=threads, device=device, **settings)
        return {"run": _torch_forward(runner, x), "gmacs": gmacs, "source": source, "settings": runner.settings,
                "timer": _cuda_events if runner.device.type == "cuda" else _wall_clock,
                "device": _device_name(runner.device)}
    if isinstance(model, LoadedModel):
        path = folder / f"{label}-b{batch}.onnx"
        if not path.is_file():  # unverified: timing needs the graph, not a second proof (yolo-prune export checks)
            export_model(model, path, img_size=img_size, batch=batch, verify=False)
    else:
        path = _check_file(Path(model), runtime)
    runner = make_runner(runtime, path, threads=threads, **settings)
    return {"run": lambda: runner(x), "gmacs": gmacs, "source": source, "settings": getattr(runner, "settings", {}),
            "timer": _wall_clock, "device": _device_name(torch.device("cuda" if runtime == "tensorrt" else "cpu"))}


def _torch_forward(runner: Any, x: np.ndarray) -> Callable[[], None]:
    images = torch.from_numpy(x).to(runner.device)
    images = images.half() if runner.half else images
    if runner.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def run() -> None:
        with torch_threads(runner.threads):
            runner.module(images)

    return run


def _check_file(path: Path, runtime: str) -> Path:
    suffixes = RUNTIME_FILE_SUFFIXES[runtime]
    if path.suffix not in suffixes:
        raise ValueError(f"{runtime} runs {' or '.join(suffixes)} files, got {path}; pass a checkpoint (.pt) to "
                         f"have it exported, or a file exported for {runtime}")
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; check the path")
    return path


def _runtime_version(runtime: str) -> str:
    return str(getattr(importlib.import_module(runtime), "__version__", "unknown"))  # runtime names are packages
