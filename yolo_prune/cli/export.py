"""``yolo-prune export`` / ``scripts/export.py``: flags -> one ``yolo_prune.deploy`` call (see ``cli/deploy.py``)."""
from __future__ import annotations

import argparse
from typing import Any

from yolo_prune.cli.deploy import add_export_args, run_export

HELP = "export to ONNX / OpenVINO / TensorRT, checked against PyTorch"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the export flags to ``parser``."""
    return add_export_args(parser)


def run(args: argparse.Namespace) -> Any:
    """Runs the export job described by ``args``."""
    return run_export(args)
