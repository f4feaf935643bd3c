#!/usr/bin/env python3
"""Convert a YOLO-txt dataset (images/ + labels/*.txt) to COCO json.

    python scripts/yolo_txt_to_coco.py --data coco128.yaml --out data/coco128-coco
    python scripts/yolo_txt_to_coco.py --images ds/images/val --names cat dog --out ds/instances_val.json
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from yolo_prune.data.errors import DataError  # noqa: E402
from yolo_prune.data.yolo_txt import add_convert_args, run_convert  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = add_convert_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    try:
        run_convert(args)
    except (DataError, FileNotFoundError) as err:
        print(f"yolo_txt_to_coco: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
