"""Operating-system errors in one line: the path, the cause in plain words, and what to do.

``OutputError`` is what the atomic writers raise when the disk is full, the folder is
read-only or permission is denied: it names the destination (never the temporary file) and
is an ``OSError`` like the error it explains. ``describe_os_error`` words any ``OSError`` the
same way for the command line.
"""
from __future__ import annotations

import errno
from pathlib import Path

_CAUSES = {
    errno.ENOSPC: "no space left on the disk: free some space or choose another output folder",
    getattr(errno, "EDQUOT", -1): "the disk quota is used up: free some space or choose another output folder",
    errno.EROFS: "the file system is read-only: choose another output folder",
    errno.EACCES: "permission denied: fix the permissions or choose another path",
    errno.EPERM: "operation not permitted: fix the permissions or choose another path",
    errno.ENOENT: "no such file or folder: check the path",
    errno.ENOTDIR: "a part of the path is a file, not a folder: check the path",
    errno.EISDIR: "it is a folder: pass a file path",
    errno.ENAMETOOLONG: "the name is too long: choose a shorter path",
    errno.EIO: "input/output error: the disk or network share may be failing",
}


class OutputError(OSError):
    """An output that could not be written; ``filename`` is the destination, ``errno`` the cause."""

    def __init__(self, path: str | Path, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror, str(path))

    def __str__(self) -> str:
        return describe_os_error(self)


def describe_os_error(err: OSError) -> str:
    """One line for ``err``: what could not be done to which path, why, and the fix.

    An ``OSError`` raised with a message of this project's own (no ``errno``) is returned as it is.
    """
    if err.errno is None:
        return str(err)
    cause = _CAUSES.get(err.errno, f"{err.strerror or 'operating-system error'}")
    action = "cannot write" if isinstance(err, OutputError) else "cannot access"
    where = f" {err.filename}" if err.filename else ""
    also = f" and {err.filename2}" if getattr(err, "filename2", None) else ""
    return f"{action}{where}{also}: {cause} (errno {errno.errorcode.get(err.errno, err.errno)})"
