"""The main job end to end on a tiny budget: stages, report, and continuing an interrupted run."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from yolo_prune.paths import MODEL_CFGS_DIR
from yolo_prune.pipeline import PipelineSettings, _check_plan, _prune_plan, main_job, targets, verdict


def _tiny_settings(tmp_path) -> PipelineSettings:
    cfg = yaml.safe_load((MODEL_CFGS_DIR / "training" / "yolov7-tiny.yaml").read_text())
    cfg["width_multiple"] = 0.125
    cfg_path = tmp_path / "yolov7-tiny-w0.125.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    return PipelineSettings(cfg=str(cfg_path), out=tmp_path / "run", img_size=64, synthetic_train=8,
                            synthetic_val=4, baseline_epochs=1, finetune_epochs=1, batch_size=4, nominal_batch=4,
                            baseline_batch=2, val_period=1, workers=0, device="cpu", fps_runs=2, round_to=None,
                            min_channels=6, reduction=2.0)  # widths of 4-64 channels: the default 16 would hold most groups


def test_main_job_runs_every_stage_and_reports(tmp_path, capfd):
    settings = _tiny_settings(tmp_path)
    report = main_job(settings)
    names = [m["name"] for m in report["models"]]
    assert names == ["baseline", "pruned", "pruned+finetuned", "control"]
    base, pruned, tuned, control = report["models"]
    assert pruned["gmacs"] < base["gmacs"] / 1.9 and tuned["gmacs"] == pruned["gmacs"]
    assert control["gmacs"] == base["gmacs"] and control["params_m"] == base["params_m"]  # unpruned
    assert report["targets"]["macs_reduction"] == base["gmacs"] / tuned["gmacs"]
    assert report["baseline_origin"].startswith("trained here")  # the shipped one fits no 64 px run
    # no --ratio: per-stage ratios allocated from a sensitivity scan scored on train images, val unseen
    assert "sensitivity scan" in report["pruning"] and f"{settings.reduction:g}x" in report["pruning"]
    scan_args = yaml.safe_load((settings.out / "sensitivity" / "args.yaml").read_text())
    assert scan_args["split"] == "train" and scan_args["reduction"] == settings.reduction
    recipe = yaml.safe_load((settings.out / "sensitivity" / "recipe.yaml").read_text())
    assert recipe["min_channels"] == settings.min_channels == scan_args["min_channels"]  # scan, allocation, prune
    before, after = base["channels"], pruned["channels"]
    assert all(after[k] >= min(before[k], settings.min_channels) for k in before) and after != before
    assert report["targets"]["macs_reduction"] > settings.reduction * 0.95
    # the baseline trains with its own recipe: hyp, batch and close-mosaic, not the fine-tune arms'
    baseline_args = yaml.safe_load((settings.out / "baseline" / "args.yaml").read_text())
    assert Path(baseline_args["hyp"]).name == Path(settings.hyp_baseline).name == "hyp.scratch.short.yaml"
    assert baseline_args["settings"]["batch_size"] == baseline_args["settings"]["nominal_batch"] == 2
    assert baseline_args["settings"]["close_mosaic"] == settings.baseline_close_mosaic > 0
    # the control arm got exactly the pruned arm's fine-tune: settings, hyp and seed; only the start differs
    arms = report["arms"]
    assert arms["control"]["settings"] == arms["pruned+finetuned"]["settings"]
    assert arms["control"]["hyp"] == arms["pruned+finetuned"]["hyp"]
    assert arms["control"]["weights"] != arms["pruned+finetuned"]["weights"] and arms["control"]["teacher"] is None
    for runtime in ("torch", "onnxruntime"):  # baseline vs pruned+finetuned, timed interleaved in one process
        speed = report["speed"][runtime]
        assert speed["speedup_p10"] <= speed["speedup_median"] <= speed["speedup_p90"] and speed["threads"] >= 1
        assert speed["baseline_ms"] > 0 and speed["pruned_ms"] > 0
    t = report["targets"]
    for key in ("map50_95", "map50"):
        expected = tuned[key] / control[key] if control[key] > 0 else None
        assert t[f"retention_{key}"] == expected
    for m in report["models"]:
        assert 0.0 <= m["map50_95"] <= m["map50"] <= 1.0 and m["fps"] > 0
    # latency per architecture from the interleaved A/B (one of a pair timed alone can be 25 % off the other)
    torch_ab = report["speed"]["torch"]
    assert base["latency_ms"] == control["latency_ms"] == torch_ab["baseline_ms"]
    assert pruned["latency_ms"] == tuned["latency_ms"] == torch_ab["pruned_ms"]
    assert tuned["fps"] == 1000.0 / torch_ab["pruned_ms"] and tuned["latency_alone_ms"] > 0
    assert report["latency_source"].startswith("torch A/B")
    out = settings.out
    assert json.loads((out / "report.json").read_text())["models"][0]["name"] == "baseline"
    page = (out / "report" / "report.md").read_text()
    assert all(name in page for name in names)
    assert (out / "report" / "report.html").exists() and (out / "settings.yaml").exists()
    assert f"yolo-prune run --out {out}" in page and report["command"].startswith("yolo-prune run")
    printed = capfd.readouterr().out  # fd-level: the control arm's process prints there too
    assert "mAP50-95" in printed and "fewer MACs" in printed
    if len(os.sched_getaffinity(0)) >= 2:  # on CPU the control trains in a second process, beside the pruned arm
        assert "(control arm, same budget) in a second process" in printed
    assert "retention" in page and "control" in page and "FPS vs mAP50-95 (batch 1, torch A/B" in page

    # re-running continues: every stage is found done and nothing is trained again
    stamp = (out / "finetune" / "weights" / "best.pt").stat().st_mtime_ns
    again = main_job(settings)
    assert again["models"] == report["models"]
    assert (out / "finetune" / "weights" / "best.pt").stat().st_mtime_ns == stamp
    assert "training the" not in capfd.readouterr().out


def test_retention_is_the_pruned_arm_over_the_control():
    rows = {"baseline": {"gmacs": 4.0, "map50_95": 0.5, "map50": 0.8},
            "pruned+finetuned": {"gmacs": 1.0, "map50_95": 0.45, "map50": 0.76},
            "control": {"gmacs": 4.0, "map50_95": 0.6, "map50": 0.8}}
    t = targets(rows)
    assert t["macs_reduction"] == 4.0 and t["retention_map50_95"] == 0.75 and t["retention_map50"] == 0.95
    assert t["map_vs_baseline"] == 0.9  # the optimistic figure the control arm corrects
    assert "75.0% of the control" in verdict(t)
    no_control = targets({k: v for k, v in rows.items() if k != "control"})
    assert no_control["retention_map50_95"] is None and "no control arm" in verdict(no_control)
    assert "-" in verdict({**t, "retention_map50_95": None, "map_vs_baseline": None})


def test_distill_and_compensation_apply_to_the_pruned_arm_only(tmp_path, capfd):
    settings = _tiny_settings(tmp_path)
    settings.distill = True
    settings.compensate, settings.calibration_images = True, 4
    settings.parallel_arms = False  # and the arms one after the other, in this process
    report = main_job(settings)
    assert "second process" not in capfd.readouterr().out
    arms = report["arms"]
    assert arms["pruned+finetuned"]["teacher"] is not None and arms["control"]["teacher"] is None
    assert "Distillation: the pruned arm" in (settings.out / "report" / "report.md").read_text()
    pruned = json.loads((settings.out / "pruned" / "pruned.json").read_text())
    assert pruned["settings"]["compensate"] is True
    assert "refitted by least squares on 4 train images" in report["pruning"] == pruned["plan"]


def test_a_ratio_or_a_recipe_replaces_the_allocation_and_both_are_refused(tmp_path):
    settings = PipelineSettings(out=tmp_path, ratio=0.3, round_to=8)
    kwargs, plan = _prune_plan(settings, Path("unused.pt"), Path("unused.yaml"))  # neither is read: no scan
    assert kwargs == {"pruning_ratio": 0.3, "importance": "l2", "round_to": 8, "min_channels": 16} and "ratio 0.3" in plan
    settings = PipelineSettings(out=tmp_path, recipe=Path("uniform-30"))
    kwargs, plan = _prune_plan(settings, Path("unused.pt"), Path("unused.yaml"))
    assert kwargs["pruning_ratio"] == 0.3 and plan == "recipe uniform-30"
    settings.ratio = 0.5
    with pytest.raises(ValueError, match="pass one of them"):  # main_job's first step
        _check_plan(settings)
    with pytest.raises(ValueError, match="--calibration-images must be >= 1"):
        _check_plan(PipelineSettings(out=tmp_path, compensate=True, calibration_images=0))
