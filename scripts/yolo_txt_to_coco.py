#!/usr/bin/env python3
"""Convert a YOLO-txt dataset (images/ + labels/*.txt) to COCO json. Same flags as ``yolo-prune yolo-txt-to-coco``.

python scripts/yolo_txt_to_coco.py --data coco128.yaml --out data/coco128-coco
python scripts/yolo_txt_to_coco.py --images ds/images/val --names cat dog --out ds/instances_val.json
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from yolo_prune.cli import main as cli_main  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the conversion; returns the exit status."""
    return cli_main(["yolo-txt-to-coco", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
