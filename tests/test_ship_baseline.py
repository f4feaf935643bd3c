"""scripts/ship_baseline.py: the card of a baseline run says the commands that re-create it."""
from __future__ import annotations

import yaml

from tests._fixtures_data import load_script
from yolo_prune.data.synthetic import make_synthetic_dataset


def test_card_of_a_cfg_run_has_the_commands_that_remake_it(tmp_path):
    from yolo_prune import api

    data = make_synthetic_dataset(tmp_path / "data", n_train=4, n_val=2, img_size=64, profile="demo")
    run = tmp_path / "run"
    api.finetune(cfg="yolov7-tiny", data=data, out_dir=run, epochs=2, img_size=64, batch_size=2, nominal_batch=2,
                 close_mosaic=1, workers=0, device="cpu", val_period=1)
    assert yaml.safe_load((run / "args.yaml").read_text())["weights"] is None  # built from the cfg, no file
    card = load_script("ship_baseline").make_card(run)
    assert card["data"] == {"profile": "demo", "seed": 0, "img_size": 64, "n_train": 4, "n_val": 2}
    assert card["commands"][0] == ("yolo-prune make-synthetic --out data/demo --profile demo --seed 0 --img 64 "
                                   "--n-train 4 --n-val 2")
    train = card["commands"][1]
    assert train.startswith("yolo-prune finetune --cfg yolov7-tiny --data data/demo/data.yaml")
    assert "--epochs 2 " in train and "--batch 2 --nominal-batch 2 " in train and "--close-mosaic 1 " in train
    assert card["epochs"] == 2 and card["val"]["epoch"] == 2 and 0.0 <= card["val"]["map50_95"] <= 1.0
