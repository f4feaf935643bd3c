#!/usr/bin/env python3
"""Fine-tune a (pruned) YOLO checkpoint, or train one from a cfg. Same flags as ``yolo-prune finetune``.

Single process:   python scripts/finetune.py --weights pruned.pt --data data.yaml --epochs 30
Data parallel:    torchrun --nproc_per_node 2 scripts/finetune.py --weights pruned.pt --data data.yaml
Continue a run:   python scripts/finetune.py --resume runs/finetune/exp
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from yolo_prune.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["finetune", *sys.argv[1:]]))
