"""``yolo-prune yolo-txt-to-coco`` / ``scripts/yolo_txt_to_coco.py``: a YOLO-txt dataset -> COCO json."""
from __future__ import annotations

import argparse
from pathlib import Path

from yolo_prune.data.errors import DataError
from yolo_prune.data.yolo_txt import convert_yolo_data_yaml, list_images, yolo_txt_to_coco

HELP = "convert a YOLO-txt dataset (images/ + labels/*.txt) to COCO json"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Flags of the conversion: a whole Ultralytics data yaml, or one image folder with class names."""
    parser.add_argument("--data", type=Path, help="Ultralytics data yaml: converts all its splits")
    parser.add_argument("--images", type=Path, help="image folder or .txt list (instead of --data)")
    parser.add_argument("--labels", type=Path, help="label folder (default: /images/ -> /labels/)")
    parser.add_argument("--names", nargs="+", help="class names in class-index order (with --images)")
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder (--data) or json file (--images)")
    return parser


def run(args: argparse.Namespace) -> Path:
    """Runs the conversion chosen by ``args``; returns the data.yaml or json written."""
    if args.data is not None:
        out = convert_yolo_data_yaml(args.data, args.out)
    elif args.images is not None and args.names:
        base = args.images if args.images.is_dir() else None
        out, root = yolo_txt_to_coco(list_images(args.images), args.names, args.out, images_root=base,
                                     labels_root=args.labels)
        print(f"file_name entries are relative to {root} (use it as the images folder)")
    else:
        raise DataError("pass --data their_data.yaml, or --images DIR with --names a b c ...")
    print(f"wrote {out}")
    return out
