"""The main job, ``yolo-prune run``: baseline -> prune -> fine-tune (+ control) -> evaluate -> report.

With no arguments it runs the embedded default on this machine: the synthetic ``demo`` shapes
set, the shipped yolov7-tiny baseline trained on it (``yolo_prune/assets/``, made by the
project's own ``finetune --cfg``; ``--train-baseline`` trains one instead), channel pruning
and a short fine-tune. The same fine-tune (budget, hyp, seed) is given to the *unpruned*
baseline, the control arm, so that the pruned model is compared with a model that had the same
extra training: retention = pruned-fine-tuned / control. The report (table, JSON, markdown,
HTML, plots) shows baseline, pruned, pruned + fine-tuned and control. ``--weights`` and
``--data`` run the same job on the user's own checkpoint and dataset.

Every stage writes into ``--out`` and is skipped when its output is already there, and an
interrupted fine-tune resumes from its ``last.pt``: re-running the command continues.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml

from yolo_prune import api
from yolo_prune.data.batches import calibration_batches
from yolo_prune.io import atomic_write_json, atomic_write_text
from yolo_prune.paths import HYP_DIR
from yolo_prune.report.entries import TIMED_ALONE
from yolo_prune.reporting import format_table
from yolo_prune.settings import JobSettings

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
SHIPPED_BASELINE = ASSETS_DIR / "yolov7-tiny-demo.pt"   # its recipe and scores: the .json beside it
REDUCTION_TOLERANCE = 0.02  # the allocation's GMACs within 2 % of baseline / reduction


@dataclass
class PipelineSettings(JobSettings):
    """Every default of the main job, in one place (sized for a 2-core CPU by default)."""

    weights: Path | None = None       # the user's checkpoint; None: the shipped baseline (or train one)
    train_baseline: bool = False      # train the baseline from ``cfg`` even where a shipped one fits
    cfg: str = "yolov7-tiny"
    data: Path | None = None          # the user's data yaml; None: the synthetic set of ``profile``
    profile: str = "demo"             # synthetic profile (``make-synthetic --profile``)
    out: Path = Path("runs/demo")
    img_size: int = 160
    synthetic_train: int = 400
    synthetic_val: int = 100
    baseline_epochs: int = 150        # only when the baseline is trained here
    baseline_batch: int = 8           # its batch and nominal batch
    baseline_close_mosaic: int = 15   # its final epochs without mosaic
    finetune_epochs: int = 10         # both arms: the pruned model and the control
    batch_size: int = 4               # the fine-tune arms' batch: 100 optimizer steps per demo epoch
    nominal_batch: int = 4            # optimizer step every this many images
    val_period: int = 5               # validate during fine-tuning every this many epochs
    ratio: float | None = None        # one ratio for every group; None: per-stage ratios from a sensitivity scan
    reduction: float = 3.1            # that allocation's target: baseline GMACs / pruned GMACs
    min_channels: int = 16            # no group narrower (scan, allocation, prune): keeps the stem at 16 of 32
    recipe: Path | None = None        # or a recipe yaml / name in configs/prune/ (replaces ratio and reduction)
    scan_images: int = 100            # train images (unaugmented) that score the scan: val stays unseen
    scan_ratios: tuple[float, ...] = (0.3, 0.5, 0.7)  # 0.9 on the deep stages cost 3-4 points after fine-tuning
    importance: str = "l2"
    round_to: int | None = 8
    distill: bool = False             # the pruned arm (only) learns from the baseline as teacher
    compensate: bool = False          # refit each conv that loses inputs by least squares (pruning.compensation)
    calibration_images: int = 128     # train images that fit that compensation
    control: bool = True              # fine-tune the unpruned baseline with the same budget
    parallel_arms: bool = True        # on CPU: the control trains in a second process, on half the cores,
                                      # while the scan and the pruned arm run (same settings, seed and hyp)
    hyp_baseline: str | None = str(HYP_DIR / "hyp.scratch.short.yaml")
    hyp_finetune: str | None = None   # None: the project's fine-tuning hyp
    device: str = ""
    workers: int = 2
    seed: int = 0
    trust: bool = False
    fps_runs: int = 20
    speed_runtimes: str = "torch,onnxruntime"  # A/B latency of baseline vs pruned+finetuned on each ('' : none)
    speed_threads: int | None = None  # threads of that A/B timing (None: the cores this process may use)


def main_job(s: PipelineSettings, *, command_line: str | None = None) -> dict[str, Any]:
    """Runs (or continues) every stage; returns the report dict also written to ``report.json``.

    ``command_line`` (the CLI passes its own) is shown in the report; None: the settings' equivalent.
    """
    _check_plan(s)  # a bad recipe fails now, not after the baseline has trained
    s.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(yaml.safe_dump(_plain(dataclasses.asdict(s)), sort_keys=False), s.out / "settings.yaml")
    started = time.perf_counter()
    data = s.data or _synthetic_data(s)
    baseline_path, baseline_origin = _baseline(s, data)
    with _control_alongside(s, data, baseline_path):
        pruned_path = _prune(s, baseline_path, data)
        stages = {"baseline": baseline_path, "pruned": pruned_path,
                  "pruned+finetuned": _finetune(s, data, pruned_path, baseline_path)}
    if s.control:  # trained by the second process (then found done), or here
        stages["control"] = _control(s, data, baseline_path)
    rows = {name: _evaluate(s, data, path, name) for name, path in stages.items()}
    report = {"command": command_line or f"yolo-prune run --out {s.out}  # from the API; settings in settings.yaml",
              "settings": _plain(dataclasses.asdict(s)), "data": str(data), "baseline_origin": baseline_origin,
              "pruning": json.loads(pruned_path.with_suffix(".json").read_text()).get("plan"),
              "models": list(rows.values()), "arms": _arms(s, stages), "wall_s": round(time.perf_counter() - started, 1)}
    report["targets"] = targets(rows)
    report["speed"] = _speed(s, stages)
    report["latency_source"] = with_ab_latency(report["models"], report["speed"])
    atomic_write_json(report, s.out / "report.json")
    _write_pages(s, report)
    print("\n" + summary_table(report["models"]))
    for line in speed_lines(report["speed"]):
        print(line)
    print("\n" + verdict(report["targets"]) + f" Report: {s.out / 'report' / 'report.md'}")
    return report


def with_ab_latency(models: list[dict[str, Any]], speed: dict[str, Any]) -> str:
    """Gives every model the torch A/B's latency of its architecture; returns where the figures come from.

    Timed alone, one after the other, two models of one architecture (the baseline and the control)
    can differ by 25 % on a shared machine. The A/B timed the baseline's and the pruned model's
    architectures interleaved, so each model with the baseline's channels gets the baseline's median
    and each with the pruned model's channels the pruned one's (``latency_alone_ms`` / ``fps_alone``
    keep the single timings; ``timing`` says so, for the report). Without a torch A/B the single
    timings stay.
    """
    ab = speed.get("torch") or {}
    by_name = {m["name"]: m for m in models}
    if "baseline_ms" not in ab or not {"baseline", "pruned+finetuned"} <= by_name.keys():
        return TIMED_ALONE
    timing = f"torch A/B, {ab['threads']} threads: the interleaved medians, one per architecture"
    medians = [(by_name["baseline"]["channels"], ab["baseline_ms"]),
               (by_name["pruned+finetuned"]["channels"], ab["pruned_ms"])]
    for m in models:
        ms = next((ms for channels, ms in medians if m.get("channels") == channels), None)
        if ms is not None:
            m.update(latency_alone_ms=m["latency_ms"], fps_alone=m["fps"], latency_ms=ms, fps=1000.0 / ms,
                     timing=timing)
    return timing


def summary_table(models: list[dict[str, Any]]) -> str:
    """The terminal table of the main job's models."""
    rows = [[m["name"], m["params_m"], m["gmacs"], m["map50_95"], m["map50"], m["fps"], m["latency_ms"]]
            for m in models]
    return format_table(rows, ["model", "params (M)", "GMACs", "mAP50-95", "mAP50", "FPS", "latency (ms)"])


def targets(rows: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """MACs reduction and retention: the pruned-fine-tuned model's mAP over the control's.

    The control is the unpruned baseline fine-tuned with the same budget, so retention isolates
    what pruning cost from what the extra training gave. Without a control, retention is None
    (and ``map_vs_baseline`` is the only, optimistic, comparison).
    """
    base, tuned, control = rows["baseline"], rows["pruned+finetuned"], rows.get("control")
    out: dict[str, float | None] = {"macs_reduction": base["gmacs"] / tuned["gmacs"],
                                    "map_vs_baseline": _ratio(tuned["map50_95"], base["map50_95"])}
    for key in ("map50_95", "map50"):
        out[f"retention_{key}"] = _ratio(tuned[key], control[key]) if control else None
    return out


def verdict(t: dict[str, float | None]) -> str:
    """One sentence with the job's claim and its figures (``-`` where a reference mAP is 0)."""
    macs = f"{t['macs_reduction']:.2f}x fewer MACs"
    if t.get("retention_map50_95") is None and t.get("retention_map50") is None:
        return (f"pruned + fine-tuned keeps {_pct(t['map_vs_baseline'])} of the baseline mAP50-95 with {macs} "
                f"(no control arm with a non-zero mAP: part of that may be the extra training).")
    return (f"pruned + fine-tuned keeps {_pct(t['retention_map50_95'])} of the control's mAP50-95 "
            f"({_pct(t['retention_map50'])} of its mAP50) with {macs}; the control is the unpruned baseline "
            f"given the same fine-tune.")


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


# -- stages --------------------------------------------------------------------------
def _synthetic_data(s: PipelineSettings) -> Path:
    from yolo_prune.data.synthetic import make_synthetic_dataset

    data_yaml = s.out / "data" / "data.yaml"
    if data_yaml.exists():
        return data_yaml
    print(f"[1/6] writing the synthetic {s.profile} dataset to {data_yaml.parent}")
    return make_synthetic_dataset(data_yaml.parent, n_train=s.synthetic_train, n_val=s.synthetic_val,
                                  img_size=s.img_size, seed=s.seed, profile=s.profile)


def shipped_baseline_card() -> dict[str, Any]:
    """What the shipped baseline is: the command, data, seed, epochs, wall time and scores that made it."""
    return json.loads(SHIPPED_BASELINE.with_suffix(".json").read_text())


def _shipped_fits(s: PipelineSettings) -> bool:
    """The shipped baseline was trained on exactly the synthetic set these settings generate."""
    if s.data is not None or s.train_baseline or not SHIPPED_BASELINE.exists():
        return False
    card = shipped_baseline_card()
    wanted = {"profile": s.profile, "n_train": s.synthetic_train, "n_val": s.synthetic_val,
              "img_size": s.img_size, "seed": s.seed}
    return all(card["data"].get(k) == v for k, v in wanted.items()) and s.cfg == card["cfg"]


def _baseline(s: PipelineSettings, data: Path) -> tuple[Path, str]:
    if s.weights is not None:
        return s.weights, "user checkpoint"
    if _shipped_fits(s):
        return SHIPPED_BASELINE, "shipped (yolo_prune/assets/yolov7-tiny-demo.json says how it was made)"
    path = _train(s.out / "baseline", s, data, epochs=s.baseline_epochs, hyp=s.hyp_baseline, cfg=s.cfg,
                  step=f"[2/6] training the {s.cfg} baseline", batch_size=s.baseline_batch,
                  nominal_batch=s.baseline_batch, close_mosaic=s.baseline_close_mosaic)
    return path, f"trained here from {s.cfg} for {s.baseline_epochs} epochs"


def _prune(s: PipelineSettings, baseline: Path, data: Path) -> Path:
    out = s.out / "pruned" / "pruned.pt"
    if out.exists():
        return out
    kwargs, plan = _prune_plan(s, baseline, data)
    if s.compensate:
        kwargs["calibration_batches"] = batches = calibration_batches(data, img_size=s.img_size,
                                                                      n_images=s.calibration_images)
        used = sum(len(imgs) for imgs, _ in batches)
        plan += f"; each conv that loses inputs refitted by least squares on {used} train images"
    print(f"[3/6] pruning {baseline}: {plan}")
    loaded = api.load(baseline, trust=s.trust)
    result = api.prune(loaded, img_size=s.img_size, seed=s.seed, **kwargs)
    api.save(loaded, out)
    atomic_write_json(result.summary() | {"plan": plan}, out.with_suffix(".json"))
    return out


def _check_plan(s: PipelineSettings) -> None:
    from yolo_prune.pruning.recipe import read_recipe

    if s.recipe is not None and s.ratio is not None:
        raise ValueError("--recipe and --ratio both set the pruning ratios: pass one of them")
    if s.compensate and s.calibration_images < 1:
        raise ValueError(f"--calibration-images must be >= 1 with --compensate, got {s.calibration_images}")
    if s.recipe is not None:
        read_recipe(s.recipe)
    elif s.ratio is None and not s.reduction > 1:
        raise ValueError(f"--reduction is baseline GMACs / pruned GMACs and must be > 1 (e.g. 3), got {s.reduction}")
    elif s.ratio is None and not (s.scan_ratios and all(0 < r < 1 for r in s.scan_ratios)):
        raise ValueError(f"--scan-ratios must be ratios in (0, 1), e.g. 0.3 0.5 0.7; got {list(s.scan_ratios)}")


def _prune_plan(s: PipelineSettings, baseline: Path, data: Path) -> tuple[dict[str, Any], str]:
    """``prune_model`` arguments and a sentence saying how they were chosen: recipe, ratio or allocation."""
    from yolo_prune.pruning.recipe import load_recipe

    if s.recipe is not None:  # main_job checked the settings (_check_plan) before any stage ran
        return load_recipe(s.recipe), f"recipe {s.recipe}"
    if s.ratio is not None:
        return ({"pruning_ratio": s.ratio, "importance": s.importance, "round_to": s.round_to,
                 "min_channels": s.min_channels},
                f"ratio {s.ratio} in every group ({s.importance}, round_to {s.round_to}, min_channels {s.min_channels})")
    recipe = _allocate(s, baseline, data)
    return load_recipe(recipe), (f"per-stage ratios allocated for {s.reduction:g}x fewer GMACs from a sensitivity "
                                 f"scan on {s.scan_images} train images ({recipe}; {s.importance}, round_to {s.round_to}, "
                                 f"min_channels {s.min_channels})")


def _allocate(s: PipelineSettings, baseline: Path, data: Path) -> Path:
    """Scans each output-stride stage's damage on train images and allocates ratios for ``reduction``."""
    out = s.out / "sensitivity"
    if not (out / "recipe.yaml").exists():
        print(f"[3/6] sensitivity scan of {baseline}: each stride stage alone at ratios "
              f"{', '.join(f'{r:g}' for r in s.scan_ratios)}, scored on {s.scan_images} train images")
    return api.stage_allocation(baseline, data, out, reduction=s.reduction, ratios=s.scan_ratios,
                                images=s.scan_images, img_size=s.img_size, importance=s.importance,
                                round_to=s.round_to, min_channels=s.min_channels, tolerance=REDUCTION_TOLERANCE,
                                batch_size=s.batch_size,
                                device=s.device, workers=s.workers, trust=s.trust)


def _finetune(s: PipelineSettings, data: Path, pruned: Path, baseline: Path) -> Path:
    return _train(s.out / "finetune", s, data, epochs=s.finetune_epochs, hyp=s.hyp_finetune, weights=pruned,
                  teacher=baseline if s.distill else None,
                  step="[4/6] fine-tuning the pruned model" + (" (distilling from the baseline)" if s.distill else ""))


def _control(s: PipelineSettings, data: Path, baseline: Path, step_note: str = "") -> Path:
    # the same budget, hyp and seed as the pruned arm, never a teacher: the fair reference for retention
    return _train(s.out / "control", s, data, epochs=s.finetune_epochs, hyp=s.hyp_finetune, weights=baseline,
                  step=f"[5/6] fine-tuning the unpruned baseline (control arm, same budget){step_note}")


def _parallel_threads(s: PipelineSettings) -> int:
    """Threads for the control's process when the arms train side by side; 0: train them one after the other."""
    from yolo_prune.devices import select_device

    if not (s.control and s.parallel_arms) or (s.out / "control" / "done.json").exists():
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return cores // 2 if cores >= 2 and select_device(s.device).type == "cpu" else 0


@contextlib.contextmanager
def _control_alongside(s: PipelineSettings, data: Path, baseline: Path) -> Iterator[None]:
    """Trains the control arm in a second process (half the cores) while the block runs here (the rest).

    The block's end waits for it. A process that failed leaves its run to be continued (or its
    error raised) by ``_control`` here; an exception or interrupt here stops it first.
    """
    import torch

    threads = _parallel_threads(s)
    if not threads:
        yield
        return
    process = multiprocessing.get_context("spawn").Process(target=_control_process, args=(s, data, baseline, threads),
                                                             name="yolo-prune control arm")
    own = torch.get_num_threads()
    process.start()
    torch.set_num_threads(max(1, own - threads))
    try:
        yield
        process.join()
    finally:
        torch.set_num_threads(own)
        if process.is_alive():  # the block failed or was interrupted: stop the control too (it saves last.pt)
            process.terminate()
            process.join()
    if process.exitcode != 0:
        print(f"the control arm's process ended with exit code {process.exitcode}; continuing its run here")


def _control_process(s: PipelineSettings, data: Path, baseline: Path, threads: int) -> None:
    """The second process: the control arm on ``threads`` threads, without progress bars (the pruned arm has them).

    Ctrl-C reaches the main process, which stops this one with SIGTERM; it exits quietly (its last
    epoch is in ``last.pt``). Any other error is one line here and is raised again by the main process.
    """
    import torch

    from yolo_prune.interrupts import termination_as_interrupt

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with termination_as_interrupt():  # one swallowed by a finalizer would leave the main process waiting
            os.environ["TQDM_DISABLE"] = "1"
            torch.set_num_threads(threads)
            _control(s, data, baseline, step_note=f" in a second process on {threads} thread(s), beside the pruned arm")
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as err:  # noqa: BLE001 - reported here in one line; the main process raises it properly
        print(f"the control arm's process failed: {type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(1)


def _train(run: Path, s: PipelineSettings, data: Path, *, epochs: int, hyp: str | None, step: str,
           cfg: str | None = None, weights: Path | None = None, teacher: Path | None = None,
           **overrides: Any) -> Path:
    """Trains into ``run`` unless finished; resumes a run that was interrupted.

    ``overrides`` replace the job's own ``TrainSettings`` (the baseline's batch and close-mosaic).
    """
    best, last, done = run / "weights" / "best.pt", run / "weights" / "last.pt", run / "done.json"
    if done.exists() or (last.exists() and _finished(last)):
        return best
    if last.exists():  # interrupted: continue exactly where it stopped
        print(f"{step}: continuing the interrupted run in {run}")
        result = api.finetune(resume=run, trust=s.trust)
    else:
        print(f"{step} for {epochs} epochs ({run})")
        train = {"epochs": epochs, "img_size": s.img_size, "batch_size": s.batch_size,
                 "nominal_batch": s.nominal_batch, "val_period": s.val_period, "device": s.device,
                 "workers": s.workers, "seed": s.seed} | overrides
        result = api.finetune(weights, cfg=cfg, data=data, out_dir=run, hyp=hyp, teacher=teacher, exist_ok=True,
                              trust=s.trust, **train)
    atomic_write_json(result.summary(), done)
    return best


def _finished(last: Path) -> bool:
    """True when ``last.pt`` holds the final epoch of its run (crash after training, before done.json)."""
    from yolo_prune.adapters import adapter_for
    from yolo_prune.engine.checkpointing import TRAIN_STATE_KEY

    _, ckpt = adapter_for(last).load_training_checkpoint(last, trust=False)
    return int(ckpt["epoch"]) + 1 >= int(ckpt[TRAIN_STATE_KEY]["settings"]["epochs"])


def _arms(s: PipelineSettings, stages: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """The resolved fine-tune settings, hyp and teacher of each arm, read back from its run folder."""
    arms = {}
    for name, run in (("pruned+finetuned", s.out / "finetune"), ("control", s.out / "control")):
        if name not in stages:
            continue
        args = yaml.safe_load((run / "args.yaml").read_text())
        arms[name] = {"run": str(run), "weights": args.get("weights"), "teacher": args.get("teacher"),
                      "settings": args["settings"], "hyp": yaml.safe_load((run / "hyp.yaml").read_text())}
    return arms


def _evaluate(s: PipelineSettings, data: Path, weights: Path, name: str) -> dict[str, Any]:
    """The mAP on the val split plus params, GMACs and fused batch-1 latency, cached per stage."""
    from yolo_prune.data import load_data_config
    from yolo_prune.pruning import conv_out_channels

    cache = s.out / "eval" / f"{name.replace('+', '_')}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    print(f"[6/6] evaluating {name} ({weights})")
    loaded = api.load(weights, trust=s.trust)
    cfg = load_data_config(data)
    device = s.device or "cpu"
    metrics = api.evaluate(loaded, cfg.val_images, cfg.val_ann, img_size=s.img_size, batch_size=s.batch_size,
                           device=device, workers=s.workers)
    bench = api.benchmark(loaded, s.img_size, batch=1, runs=s.fps_runs, device=device)
    row = {"name": name, "source": str(weights), "params_m": bench["params_m"], "gmacs": bench["gmacs"],
           "file_mib": weights.stat().st_size / 2**20, "map50_95": float(metrics["map50_95"]),
           "map50": float(metrics["map50"]), "latency_ms": bench["latency_ms"], "fps": bench["fps"],
           "end_to_end_ms": bench["end_to_end_ms"], "device": bench["device"],
           "channels": conv_out_channels(loaded.model)}
    atomic_write_json(row, cache)
    return row


def _write_pages(s: PipelineSettings, report: dict[str, Any]) -> None:
    from yolo_prune.report import build_report

    t = report["targets"]
    notes = [f"Command: `{report['command']}` (all settings in `settings.yaml`).",
             f"Baseline: {report['baseline_origin']}.", f"Pruning: {report['pruning']}.", verdict(t)]
    if s.distill:
        notes.append("Distillation: the pruned arm learned from the baseline as teacher; the control did not.")
    arms = report["arms"]
    if "control" in arms:
        same = {k: v for k, v in arms["control"]["settings"].items() if arms["pruned+finetuned"]["settings"][k] == v}
        notes.append(f"Both arms: {s.finetune_epochs} epochs, the same hyp and seed "
                     f"({len(same)}/{len(arms['control']['settings'])} fine-tune settings identical).")
    notes.append(f"Latency and FPS (batch 1): {report['latency_source']}.")
    build_report(report["models"], s.out / "report", title="yolo-prune: baseline, pruned, fine-tuned and control",
                 notes=notes, summary=_retention_rows(t) + speed_rows(report["speed"]))


def _speed(s: PipelineSettings, stages: dict[str, Path]) -> dict[str, Any]:
    """Baseline vs pruned+finetuned latency, timed interleaved in one process on each runtime (cached)."""
    from yolo_prune.deploy.ab import compare_latency
    from yolo_prune.deploy.runtimes import missing_runtime

    cache = s.out / "eval" / "speed.json"
    if cache.exists():
        return json.loads(cache.read_text())
    out: dict[str, Any] = {}
    for runtime in [r for r in s.speed_runtimes.split(",") if r]:
        reason = missing_runtime(runtime)
        if reason:
            out[runtime] = {"skipped": reason}
            continue
        print(f"timing baseline vs pruned+finetuned on {runtime} (interleaved A/B)")
        r = compare_latency(api.load(stages["baseline"], trust=s.trust), api.load(stages["pruned+finetuned"], trust=s.trust),
                            runtime=runtime, img_size=s.img_size, threads=s.speed_threads, rounds=s.fps_runs,
                            workdir=s.out / "eval" / f"ab-{runtime}")
        out[runtime] = {k: r[k] for k in ("threads", "speedup_median", "speedup_p10", "speedup_p90", "significant",
                                          "macs_reduction", "runtime_version")}
        out[runtime].update(baseline_ms=r["original"]["latency_ms_median"], pruned_ms=r["pruned"]["latency_ms_median"])
    atomic_write_json(out, cache)
    return out


def speed_rows(speed: dict[str, Any]) -> list[tuple[str, str]]:
    """One ``(label, value)`` per runtime: the A/B speed-up with its 10-90 % spread, or why it was skipped."""
    rows = []
    for runtime, r in speed.items():
        if "skipped" in r:
            rows.append((f"speed-up on {runtime}", f"not measured ({r['skipped']})"))
            continue
        verdict_text = "" if r["significant"] else ", not significant"
        rows.append((f"speed-up on {runtime} ({r['threads']} threads, batch 1, A/B interleaved)",
                     f"{r['speedup_median']:.2f}x [{r['speedup_p10']:.2f}-{r['speedup_p90']:.2f}]{verdict_text}; "
                     f"{r['baseline_ms']:.1f} -> {r['pruned_ms']:.1f} ms"))
    return rows


def speed_lines(speed: dict[str, Any]) -> list[str]:
    """``speed_rows`` as printed lines."""
    return [f"{label}: {value}" for label, value in speed_rows(speed)]


def _retention_rows(t: dict[str, float | None]) -> list[tuple[str, Any]]:
    return [("MACs reduction (baseline / pruned)", f"{t['macs_reduction']:.2f}x"),
            ("retention mAP50-95 (pruned+finetuned / control)", _pct(t["retention_map50_95"])),
            ("retention mAP50 (pruned+finetuned / control)", _pct(t["retention_map50"])),
            ("mAP50-95 pruned+finetuned / baseline (no control: optimistic)", _pct(t["map_vs_baseline"]))]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}
