#!/usr/bin/env python3
"""Channel-prune a YOLO checkpoint. Same flags as ``yolo-prune prune``; see --help."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from yolo_prune.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["prune", *sys.argv[1:]]))
