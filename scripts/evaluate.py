#!/usr/bin/env python3
"""COCO mAP, speed and size of a checkpoint. Same flags as ``yolo-prune eval``; see --help.

python scripts/evaluate.py --weights best.pt --data data/synthetic/data.yaml --img 640
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from yolo_prune.cli import main as cli_main  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``yolo-prune eval`` with ``argv``; returns the exit status."""
    return cli_main(["eval", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
