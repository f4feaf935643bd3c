"""``yolo-prune predict`` / ``scripts/predict.py``: flags -> one ``yolo_prune.deploy`` call (see ``cli/deploy.py``)."""
from __future__ import annotations

import argparse
from typing import Any

from yolo_prune.cli.deploy import add_predict_args, run_predict

HELP = "detect on images, folders, globs and videos; annotated copies, YOLO-txt / COCO-json"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the predict flags to ``parser``."""
    return add_predict_args(parser)


def run(args: argparse.Namespace) -> Any:
    """Runs the predict job described by ``args``."""
    return run_predict(args)
