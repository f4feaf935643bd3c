#!/usr/bin/env python3
"""Per-group pruning sensitivity scan and ratio allocation. Same flags as ``yolo-prune sensitivity``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from yolo_prune.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["sensitivity", *sys.argv[1:]]))
