"""``yolo-prune make-synthetic`` / ``scripts/make_synthetic.py``: write the synthetic shapes set.

The defaults are those of ``make_synthetic_dataset`` (its signature is their one home).
"""
from __future__ import annotations

import argparse
import inspect
import time
from pathlib import Path
from typing import Any

from yolo_prune.data.synthetic import PROFILES, make_synthetic_dataset

HELP = "write the synthetic COCO-format shapes dataset"
DEFAULT_OUT = Path("data/synthetic")


def _default(name: str) -> Any:
    return inspect.signature(make_synthetic_dataset).parameters[name].default


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the synthetic-dataset flags to ``parser``."""
    parser.add_argument("--out", type=Path, help=f"output folder (default: {DEFAULT_OUT})")
    parser.add_argument("--n-train", type=int, help=f"training images (default: {_default('n_train')})")
    parser.add_argument("--n-val", type=int, help=f"validation images (default: {_default('n_val')})")
    parser.add_argument("--img", "--img-size", dest="img_size", type=int,
                        help=f"long side of every image in pixels (default: {_default('img_size')})")
    parser.add_argument("--seed", type=int, help=f"same seed -> identical dataset (default: {_default('seed')})")
    parser.add_argument("--format", dest="image_format", choices=("jpg", "png"),
                        help=f"image encoding, png is lossless (default: {_default('image_format')})")
    parser.add_argument("--max-objects", type=int, help="most shapes per image (default: the profile's)")
    parser.add_argument("--profile", choices=sorted(PROFILES),
                        help=f"demo: learnable (the main job's set); hard: small objects and clutter "
                             f"(default: {_default('profile')})")
    return parser


def run(args: argparse.Namespace) -> Path:
    """Writes the dataset described by ``args``; returns its data.yaml."""
    values = {k: getattr(args, k) for k in ("n_train", "n_val", "img_size", "seed", "image_format", "max_objects",
                                              "profile")}
    start = time.perf_counter()
    data_yaml = make_synthetic_dataset(args.out or DEFAULT_OUT, **{k: v for k, v in values.items() if v is not None})
    n_train, n_val = (values[k] if values[k] is not None else _default(k) for k in ("n_train", "n_val"))
    print(f"wrote {n_train} train + {n_val} val images in {time.perf_counter() - start:.1f}s; "
          f"data config: {data_yaml}")
    return data_yaml
