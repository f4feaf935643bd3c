"""The main job end to end on a tiny budget: stages, report, and continuing an interrupted run."""
from __future__ import annotations

import json

import yaml

from yolo_prune.paths import MODEL_CFGS_DIR
from yolo_prune.pipeline import PipelineSettings, main_job


def _tiny_settings(tmp_path) -> PipelineSettings:
    cfg = yaml.safe_load((MODEL_CFGS_DIR / "training" / "yolov7-tiny.yaml").read_text())
    cfg["width_multiple"] = 0.125
    cfg_path = tmp_path / "yolov7-tiny-w0.125.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    return PipelineSettings(cfg=str(cfg_path), out=tmp_path / "run", img_size=64, synthetic_train=8,
                            synthetic_val=4, baseline_epochs=1, finetune_epochs=1, batch_size=4, nominal_batch=4,
                            val_period=1, workers=0, device="cpu", fps_runs=2, round_to=None)


def test_main_job_runs_every_stage_and_reports(tmp_path, capsys):
    settings = _tiny_settings(tmp_path)
    report = main_job(settings)
    names = [m["name"] for m in report["models"]]
    assert names == ["baseline", "pruned", "pruned+finetuned"]
    base, pruned, tuned = report["models"]
    assert pruned["gmacs"] < base["gmacs"] / 2 and tuned["gmacs"] == pruned["gmacs"]
    assert report["targets"]["macs_reduction"] == base["gmacs"] / tuned["gmacs"]
    for m in report["models"]:
        assert 0.0 <= m["map50_95"] <= m["map50"] <= 1.0 and m["fps"] > 0
    out = settings.out
    assert json.loads((out / "report.json").read_text())["models"][0]["name"] == "baseline"
    page = (out / "report" / "report.md").read_text()
    assert all(name in page for name in names)
    assert (out / "report" / "report.html").exists() and (out / "settings.yaml").exists()
    printed = capsys.readouterr().out
    assert "mAP50-95" in printed and "fewer MACs" in printed

    # re-running continues: every stage is found done and nothing is trained again
    stamp = (out / "finetune" / "weights" / "best.pt").stat().st_mtime_ns
    again = main_job(settings)
    assert again["models"] == report["models"]
    assert (out / "finetune" / "weights" / "best.pt").stat().st_mtime_ns == stamp
    assert "training the" not in capsys.readouterr().out
