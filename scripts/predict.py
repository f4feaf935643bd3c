#!/usr/bin/env python3
"""Detections on images, folders, globs and videos. Same flags as ``yolo-prune predict``; see --help.

python scripts/predict.py --weights pruned.pt --source images/ clip.mp4 --save-txt --save-json
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from yolo_prune.cli import main as cli_main  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command with ``argv`` (default: the command line)."""
    return cli_main(["predict", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
