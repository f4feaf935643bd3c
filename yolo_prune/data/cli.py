"""``yolo-prune make-synthetic`` / ``scripts/make_synthetic.py``: write the synthetic shapes set."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from yolo_prune.data.synthetic import DEFAULT_PROFILE, PROFILES, make_synthetic_dataset


def add_synthetic_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the synthetic-dataset flags to ``parser``."""
    parser.add_argument("--out", type=Path, default=Path("data/synthetic"), help="output folder")
    parser.add_argument("--n-train", type=int, default=512, help="training images")
    parser.add_argument("--n-val", type=int, default=128, help="validation images")
    parser.add_argument("--img", "--img-size", type=int, default=320, help="long side of every image (pixels)")
    parser.add_argument("--seed", type=int, default=0, help="same seed -> identical dataset")
    parser.add_argument("--format", dest="image_format", choices=("jpg", "png"), default="jpg",
                        help="image encoding (png is lossless)")
    parser.add_argument("--max-objects", type=int, help="most shapes per image (default: the profile's)")
    parser.add_argument("--profile", choices=sorted(PROFILES), default=DEFAULT_PROFILE,
                        help="demo: learnable (the main job's set); hard: small objects and clutter (%(default)s)")
    return parser


def run_synthetic(args: argparse.Namespace) -> Path:
    """Writes the dataset described by ``args``; returns its data.yaml."""
    start = time.perf_counter()
    data_yaml = make_synthetic_dataset(args.out, n_train=args.n_train, n_val=args.n_val, img_size=args.img,
                                       seed=args.seed, image_format=args.image_format, max_objects=args.max_objects,
                                       profile=args.profile)
    print(f"wrote {args.n_train} train + {args.n_val} val images in {time.perf_counter() - start:.1f}s; "
          f"data config: {data_yaml}")
    return data_yaml
