#!/usr/bin/env python3
"""Original vs pruned latency, interleaved, on the deploy runtimes. Same flags as ``yolo-prune benchmark``.

python scripts/benchmark.py --original yolov7.pt --pruned pruned.pt --runtime onnxruntime torch --threads 2
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from yolo_prune.cli import main as cli_main  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command with ``argv`` (default: the command line)."""
    return cli_main(["benchmark", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
