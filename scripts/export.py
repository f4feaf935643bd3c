#!/usr/bin/env python3
"""Export to ONNX / OpenVINO / TensorRT, checked against PyTorch. Same flags as ``yolo-prune export``.

python scripts/export.py --weights pruned.pt --format onnx openvino --img-size 640
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from yolo_prune.cli import main as cli_main  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command with ``argv`` (default: the command line)."""
    return cli_main(["export", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
