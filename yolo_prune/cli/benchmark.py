"""``yolo-prune benchmark`` / ``scripts/benchmark.py``: flags -> one ``yolo_prune.deploy`` call (see ``cli/deploy.py``)."""
from __future__ import annotations

import argparse
from typing import Any

from yolo_prune.cli.deploy import add_benchmark_args, run_benchmark

HELP = "original vs pruned latency, interleaved A/B, on torch / onnxruntime / openvino"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the benchmark flags to ``parser``."""
    return add_benchmark_args(parser)


def run(args: argparse.Namespace) -> Any:
    """Runs the benchmark job described by ``args``."""
    return run_benchmark(args)
