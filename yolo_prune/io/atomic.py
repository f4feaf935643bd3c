"""Atomic file writing: a reader never sees a half-written output.

Everything is written to a temporary file in the destination folder, flushed to disk,
then moved over the destination with ``os.replace`` (atomic on POSIX and Windows).
The file gets the permissions any new file gets (``0o666`` less the umask), not the
private ``0o600`` that ``tempfile`` gives its files.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch


@contextlib.contextmanager
def atomic_path(path: str | Path, *, keep_suffix: bool = False) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; on success it replaces ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched.
    ``keep_suffix`` ends the temporary name with ``path``'s suffix, for writers that choose the
    format by extension (OpenCV's video and image writers).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if keep_suffix else ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        os.chmod(tmp_path, _new_file_mode())
        yield tmp_path
        with open(tmp_path, "rb+") as f:  # make the bytes durable before the rename
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def current_umask() -> int:
    """The process umask (``os.umask`` can only be read by setting it: it is restored at once)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _new_file_mode() -> int:
    """What ``open(path, "w")`` would give a new file: ``0o666`` less the umask."""
    return 0o666 & ~current_umask()


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` through ``atomic_path``."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def atomic_write_text(text: str, path: str | Path) -> Path:
    """Writes ``text`` to ``path`` through ``atomic_path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_json(obj: Any, path: str | Path) -> Path:
    """Writes ``obj`` as indented JSON (paths and tensors as plain values) through ``atomic_path``."""
    return atomic_write_text(json.dumps(obj, indent=2, default=_json_default) + "\n", path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy / torch scalars and arrays
        return obj.tolist()
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")
