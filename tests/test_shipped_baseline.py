"""The shipped demo baseline: safe to load, trained as its card says, used by the main job by default."""
from __future__ import annotations

from pathlib import Path

from yolo_prune.pipeline import PipelineSettings


def test_shipped_baseline_loads_safely_and_is_the_one_the_readme_describes():
    import hashlib

    from yolo_prune import api
    from yolo_prune.data.synthetic import PROFILES
    from yolo_prune.pipeline import SHIPPED_BASELINE, _shipped_fits, shipped_baseline_card

    card = shipped_baseline_card()
    assert hashlib.sha256(SHIPPED_BASELINE.read_bytes()).hexdigest() == card["sha256"]
    assert SHIPPED_BASELINE.stat().st_size < 15 * 2**20
    loaded = api.load(SHIPPED_BASELINE)  # safe mode: the allow-list, no trust
    assert loaded.family == "yolov7" and loaded.names == [n for _, n in PROFILES["demo"].classes]
    assert 0.0 < card["val"]["map50_95"] <= card["val"]["map50"] <= 1.0
    # the main job's defaults generate exactly the set it was trained on, so it starts from it
    defaults = PipelineSettings()
    assert _shipped_fits(defaults) and card["cfg"] == defaults.cfg
    assert not _shipped_fits(PipelineSettings(img_size=192)) and not _shipped_fits(PipelineSettings(train_baseline=True))
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for command in card["commands"]:
        assert command in readme, f"README lacks the command that made the shipped baseline: {command}"
    assert f"--seed {card['seed']}" in card["commands"][1] and f"--epochs {card['epochs']}" in card["commands"][1]


def test_shipped_baseline_scores_what_its_card_says(tmp_path):
    from yolo_prune import api
    from yolo_prune.data import load_data_config
    from yolo_prune.data.synthetic import make_synthetic_dataset
    from yolo_prune.pipeline import SHIPPED_BASELINE, shipped_baseline_card

    made = shipped_baseline_card()["data"]
    # images are seeded per (seed, split, index): the val split is the same whatever n_train is
    data = load_data_config(make_synthetic_dataset(tmp_path / "demo", n_train=0, n_val=made["n_val"],
                                                   img_size=made["img_size"], seed=made["seed"],
                                                   profile=made["profile"]))
    metrics = api.evaluate(api.load(SHIPPED_BASELINE), data.val_images, data.val_ann, img_size=made["img_size"],
                           workers=0)
    # the card's figure is the training run's last validation (EMA weights, unfused, fp32)
    assert abs(metrics["map50_95"] - shipped_baseline_card()["val"]["map50_95"]) < 0.01
