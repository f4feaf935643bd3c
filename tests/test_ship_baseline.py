"""scripts/ship_baseline.py and scripts/learning_curves.py on a real (tiny) baseline run."""
from __future__ import annotations

import json

import pytest
import yaml

from tests._fixtures_data import load_script
from yolo_prune.data.synthetic import make_synthetic_dataset


@pytest.fixture(scope="module")
def cfg_run(tmp_path_factory):
    from yolo_prune import api

    tmp = tmp_path_factory.mktemp("baseline")
    data = make_synthetic_dataset(tmp / "data", n_train=4, n_val=2, img_size=64, profile="demo")
    api.finetune(cfg="yolov7-tiny", data=data, out_dir=tmp / "run", epochs=2, img_size=64, batch_size=2,
                 nominal_batch=2, close_mosaic=1, workers=0, device="cpu", val_period=1)
    return tmp / "run"


def test_card_of_a_cfg_run_has_the_commands_that_remake_it(cfg_run):
    run = cfg_run
    assert yaml.safe_load((run / "args.yaml").read_text())["weights"] is None  # built from the cfg, no file
    card = load_script("ship_baseline").make_card(run)
    assert card["data"] == {"profile": "demo", "seed": 0, "img_size": 64, "n_train": 4, "n_val": 2}
    assert card["commands"][0] == ("yolo-prune make-synthetic --out data/demo --profile demo --seed 0 --img 64 "
                                   "--n-train 4 --n-val 2")
    train = card["commands"][1]
    assert train.startswith("yolo-prune finetune --cfg yolov7-tiny --data data/demo/data.yaml")
    assert "--epochs 2 " in train and "--batch 2 --nominal-batch 2 " in train and "--close-mosaic 1 " in train
    assert card["epochs"] == 2 and card["val"]["epoch"] == 2 and 0.0 <= card["val"]["map50_95"] <= 1.0


def test_learning_curves_write_each_runs_validations(cfg_run, tmp_path):
    out = tmp_path / "curves"
    runs = load_script("learning_curves").main([str(cfg_run), "--labels", "tiny", "--out", str(out)])
    written = json.loads(out.with_suffix(".json").read_text())["runs"]
    assert written == runs and [p["epoch"] for p in runs[0]["curve"]] == [1, 2]
    assert runs[0]["label"] == "tiny" and runs[0]["batch_size"] == 2 and runs[0]["close_mosaic"] == 1
    assert runs[0]["data"].startswith("# yolo-prune synthetic shapes, profile demo")
    assert out.with_suffix(".png").stat().st_size > 0
    with pytest.raises(SystemExit):  # one label per run
        load_script("learning_curves").main([str(cfg_run), "--labels", "a", "b", "--out", str(out)])


def test_recovery_table_runs_every_arm_with_one_budget_and_an_allocation_of_equal_gmacs(cfg_run, tmp_path):
    work, out = tmp_path / "work", tmp_path / "work" / "recovery.json"
    # round_to 8 on tiny widths: GMACs steps coarser than 5 %
    argv = ["--baseline", str(cfg_run / "weights" / "best.pt"), "--data", str(cfg_run.parent / "data" / "data.yaml"),
            "--work", str(work), "--out", str(out), "--epochs", "1", "--batch", "2", "--img", "64", "--ratios", "0.5",
            "--importances", "l2", "random", "--no-distill", "--reduction", "2", "--scan-images", "2",
            "--round-to", "1", "--workers", "0", "--compensate-at", "0.5", "--close-mosaic", "1"]
    result = load_script("bench_recovery").main(argv)
    assert json.loads(out.read_text()) == result and out.with_suffix(".png").stat().st_size > 0
    rows, control = result["rows"], result["control"]
    assert [r["criterion"] for r in rows] == ["l2", "random", "l2+compensation", "uniform (l2)", "allocated (l2)",
                                              "allocated (l2)"]
    assert result["budget"]["epochs"] == 1 and result["budget"]["batch_size"] == 2 and control["prune"] is None
    assert all(r["epochs"] == control["epochs"] == 1 and r["hyp"] == control["hyp"] for r in rows)
    assert control["hyp"].endswith("hyp.finetune.long.yaml") and result["budget"]["close_mosaic"] == 1
    for arm in ["control"] + [r["name"] for r in rows]:  # every arm trained without mosaic in its final epoch
        args = yaml.safe_load((work / arm / "finetune" / "args.yaml").read_text())
        assert args["settings"]["close_mosaic"] == 1, arm
    for r in rows:  # retention is each row's mAP50-95 over the control's
        expected = r["map50_95"] / control["map50_95"] if control["map50_95"] > 0 else None
        assert r["retention"] == expected
    compensated = rows[2]  # the l2 row's channels, refitted on the train images
    assert compensated["prune"]["compensate"] is True and rows[0]["prune"]["compensate"] is False
    assert compensated["gmacs"] == rows[0]["gmacs"] and compensated["ratio"] == 0.5
    uniform, allocated = rows[3], rows[4]
    assert abs(uniform["gmacs"] / allocated["gmacs"] - 1) < 0.05  # the uniform ratio of equal GMACs
    assert allocated["gmacs"] < result["baseline_metrics"]["gmacs"] / 1.8  # allocated for 2x fewer
    scan = json.loads((work / "sensitivity" / "sensitivity.json").read_text())
    assert scan["settings"]["split"] == "train" and scan["settings"]["max_images"] == 2  # the main job's scan
    assert result["vs_random"]["l2"]["0.5"]["equal_macs"] is True
    at_half = rows[5]  # allocated for the GMACs of the uniform l2 row at 0.5 (--allocate-at's default)
    assert at_half["gmacs_of_ratio"] == 0.5 and at_half["ratio"] is None
    recipe = yaml.safe_load((work / "sensitivity-r0.5" / "recipe.yaml").read_text())
    assert not (work / "sensitivity-r0.5" / "sensitivity.json").exists()  # allocated from the first scan
    assert recipe["provenance"]["scan"] == str(work / "sensitivity" / "sensitivity.json")
    target = recipe["target"]
    assert target["value"] == pytest.approx(rows[0]["gmacs"], abs=1e-6)
    assert at_half["prune"]["layer_ratios"] and at_half["gmacs"] < rows[0]["gmacs"] * (1 + target["tolerance"])
    margin = result["vs_random"]["allocated (l2)"]["0.5"]
    assert margin["points"] == pytest.approx(100 * (at_half["map50_95"] - rows[1]["map50_95"]), abs=0.01)
    assert load_script("bench_recovery").main(argv)["rows"] == rows  # a re-run continues: every row cached


def test_recovery_budget_closes_mosaic_for_the_second_half_unless_told():
    bench = load_script("bench_recovery")
    assert bench.budget_of(bench.parse_args([])).close_mosaic == 25  # 50 epochs, the last 25 without mosaic
    assert bench.budget_of(bench.parse_args(["--epochs", "7"])).close_mosaic == 3
    assert bench.budget_of(bench.parse_args(["--close-mosaic", "0"])).close_mosaic == 0
    assert bench.budget_of(bench.parse_args([])).hyp == str(bench.LONG_HYP) and bench.LONG_HYP.is_file()


def test_recovery_plot_keeps_the_control_line_inside_the_frame(monkeypatch, tmp_path):
    import yolo_prune.report.plots as plots

    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: figures.append(fig) or path)
    rows = [{"criterion": c, "gmacs": g, "map50_95": m} for c, g, m in
            [("l2", 0.1, 0.74), ("l2", 0.17, 0.75), ("random", 0.1, 0.47), ("random", 0.17, 0.74)]]
    result = {"rows": rows, "baseline_metrics": {"gmacs": 0.41, "map50_95": 0.778},
              "control": {"map50_95": 0.793}, "budget": {"epochs": 30}}
    load_script("bench_recovery").plot(result, tmp_path / "r.png")
    low, high = figures[0].axes[0].get_ylim()
    assert low < 0.47 and high > 0.793 + 0.01  # a margin above the highest line, below the lowest point
