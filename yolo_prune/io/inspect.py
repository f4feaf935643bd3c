"""Looking inside a checkpoint without running it.

A ``torch.save`` file is a zip holding a pickle. The pickle's GLOBAL opcodes name every
class it would import; reading them with ``pickletools`` executes nothing, so we can tell
an official YOLOv7 file from an Ultralytics one (or from something unexpected) safely.
"""
from __future__ import annotations

import pickletools
import zipfile
from pathlib import Path


def pickle_globals(path: str | Path) -> set[tuple[str, str]]:
    """``{(module, name)}`` of every global the checkpoint's pickle references.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is not a zip-format ``torch.save`` file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist; check the --weights path")
    try:
        with zipfile.ZipFile(path) as archive:
            pkl_names = [n for n in archive.namelist() if n.endswith("data.pkl")]
            if not pkl_names:
                raise ValueError(f"{path} is a zip file but not a torch checkpoint (no data.pkl inside)")
            data = archive.read(pkl_names[0])
    except zipfile.BadZipFile:
        raise ValueError(f"{path} is not a torch checkpoint (not a zip archive; truncated, or another format)") from None
    return _scan(data)


def _scan(data: bytes) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    strings: list[str] = []  # STACK_GLOBAL takes module and name from the two last pushed strings
    for opcode, arg, _ in pickletools.genops(data):
        if opcode.name == "GLOBAL":
            module, name = arg.split(" ", 1)
            found.add((module, name))
        elif opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
            strings.append(arg)
        elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
            found.add((strings[-2], strings[-1]))
    return found
