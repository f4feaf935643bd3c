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
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch

from yolo_prune.io.errors import OutputError


@contextlib.contextmanager
def atomic_path(path: str | Path, *, keep_suffix: bool = False) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; on success it replaces ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched. An operating-
    system error while writing (full disk, read-only folder, permission denied) becomes an
    ``OutputError`` naming ``path`` and the cause. ``keep_suffix`` ends the temporary name with
    ``path``'s suffix, for writers that choose the format by extension (OpenCV's video and image
    writers).
    """
    path = Path(path)
    with _explained(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix if keep_suffix else ".tmp",
                                   dir=path.parent)
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        with _explained(path, tmp_path):
            os.chmod(tmp_path, _new_file_mode())
            yield tmp_path
            with open(tmp_path, "rb+") as f:  # make the bytes durable before the rename
                os.fsync(f.fileno())
            os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def _explained(path: Path, tmp: Path | None = None) -> Iterator[None]:
    """OS errors about ``path``, its folders or its temporary file become an ``OutputError`` naming ``path``."""
    try:
        yield
    except OutputError:
        raise
    except OSError as err:
        if not _about(err, path, tmp):
            raise  # e.g. a file the writer reads: its own error says which
        raise OutputError(path, err) from err


def _about(err: OSError, path: Path, tmp: Path | None) -> bool:
    if err.errno is None:  # raised with a message of its own
        return False
    if err.filename is None:  # a failed write() names no file
        return True
    name = Path(os.fsdecode(err.filename)) if isinstance(err.filename, (str, bytes)) else None
    return name is not None and (name in (path, tmp) or name in path.parents)


@contextlib.contextmanager
def staged_folder(folder: str | Path) -> Iterator[Path]:
    """Yields an empty staging folder beside ``folder``; on success its entries replace their namesakes there.

    On an exception nothing in ``folder`` changes and the staging folder is removed, so a job
    that writes several files (a report: pages, ``plots/``, ``entries.json``) never leaves a
    partial set behind. Each entry is moved atomically; the set is moved at once, not as one step.
    """
    folder = Path(folder)
    with _explained(folder):
        folder.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        try:
            yield stage
        except OutputError as err:  # name the file the user asked for, not its staged copy
            staged = Path(err.filename)
            raise OutputError(folder / staged.relative_to(stage) if stage in staged.parents else folder, err) from err
        with _explained(folder):
            folder.mkdir(exist_ok=True)
            for item in sorted(stage.iterdir()):
                target = folder / item.name
                if target.is_dir() and not target.is_symlink():  # a folder cannot be replaced by rename
                    os.replace(target, stage / f".replaced-{item.name}")
                os.replace(item, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)  # the staging folder (and what it replaced) is ours


def current_umask() -> int:
    """The process umask (``os.umask`` can only be read by setting it: it is restored at once)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _new_file_mode() -> int:
    """What ``open(path, "w")`` would give a new file: ``0o666`` less the umask."""
    return 0o666 & ~current_umask()


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` through ``atomic_path``.

    torch writes through a Python file object here, so a full disk is the ``OSError`` it is
    (named by ``OutputError``), not torch's "unexpected pos" message.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        try:
            torch.save(obj, f)
        except RuntimeError as err:
            if isinstance(err.__context__, OSError):  # torch wraps the failed write
                raise err.__context__ from None
            raise
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
