"""One writer per run folder: an advisory lock that the operating system drops when its holder dies.

``run_lock(folder)`` holds ``fcntl.flock`` on ``<folder>/.lock`` for as long as the run
writes there. A second run on the same folder is refused at once with the holder's pid. A
lock file left by a process that was killed is not a lock (the kernel released it with the
process), so a stale file never blocks a retry; it only tells who held the folder last.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # Windows: no advisory file locks
    fcntl = None

LOGGER = logging.getLogger(__name__)
LOCK_NAME = ".lock"


class RunLockedError(FileExistsError):
    """Another process is writing the same run folder."""


@contextlib.contextmanager
def run_lock(folder: str | Path) -> Iterator[Path]:
    """Holds the run folder's lock (creating the folder) while the block runs.

    Raises:
        RunLockedError: another live process holds it; the message names its pid and the way out.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    if fcntl is None:
        LOGGER.warning("this platform has no advisory file locks: make sure no other run writes %s", folder)
        yield path
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLockedError(f"{folder} is in use by another run ({_holder(path)}); wait for it to finish "
                                 f"or stop it, or choose another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                 .encode())
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "pid unknown"
    except OSError:
        return "pid unknown"
