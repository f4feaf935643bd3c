#!/usr/bin/env python3
"""Write the synthetic COCO-format shapes dataset. Same flags as ``yolo-prune make-synthetic``."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from yolo_prune.cli import main as cli_main  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``yolo-prune make-synthetic`` with ``argv``; returns the exit status."""
    return cli_main(["make-synthetic", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
