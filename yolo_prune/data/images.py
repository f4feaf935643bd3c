"""Cheap checks that an image file is whole, made once before a loader trips over it mid-epoch.

A truncated JPEG still decodes (libjpeg fills the rest with grey and prints "Premature end of
JPEG file" without a file name), so the check looks at the bytes: the format's signature at
the start, the end-of-image marker (JPEG ``FFD9``) or the ``IEND`` chunk (PNG) at the end. A
format it does not know is decoded once by OpenCV instead.
"""
from __future__ import annotations

from pathlib import Path

import cv2

_SIGNATURES = ((b"\xff\xd8\xff", "jpeg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"BM", "bmp"), (b"GIF8", "gif"),
               (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"))
_TAIL_BYTES = 64  # end markers sit in the last bytes (a few encoders pad after them)
_END_MARKERS = {"jpeg": (b"\xff\xd9", "truncated JPEG (no end-of-image marker)"),
                "png": (b"IEND", "truncated PNG (no IEND chunk)")}


def image_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a whole image (``"truncated JPEG ..."``), or None when it looks whole."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(16)
            f.seek(max(0, size - _TAIL_BYTES))
            tail = f.read()
    except OSError as err:
        return f"unreadable ({err.strerror})"
    if size == 0:
        return "empty file"
    kind = next((name for signature, name in _SIGNATURES if head.startswith(signature)), None)
    if kind is None and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        kind = "webp"
    if kind in _END_MARKERS and _END_MARKERS[kind][0] not in tail:
        return _END_MARKERS[kind][1]
    if kind is None and cv2.imread(str(path), cv2.IMREAD_UNCHANGED) is None:
        return "not an image OpenCV can read"
    return None
