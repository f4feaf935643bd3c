"""What the command modules share: flags whose defaults live in a settings dataclass.

Every flag defaults to ``None`` ("use the setting's default"); its help text shows that
default, read from the dataclass, so a default is written once. ``settings_from_args``
turns the parsed flags into the job's settings object.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, TypeVar

from yolo_prune.reporting import format_table
from yolo_prune.settings import JobSettings, ModelSourceSettings

S = TypeVar("S", bound=JobSettings)
ArgGroup = argparse.ArgumentParser | argparse._ArgumentGroup


def setting(group: ArgGroup, *flags: str, settings: type[JobSettings], dest: str, help: str,
            **kwargs: Any) -> None:
    """Adds a flag for the field ``dest`` of ``settings``; its help ends with the field's default."""
    default = settings.default(dest)
    shown = "" if default is None or default is False or default == "" else f" (default: {_shown(default)})"
    kwargs.setdefault("default", None)
    if "choices" not in kwargs:  # show the flag's name, not the field's: --ratio RATIO
        kwargs.setdefault("metavar", flags[0].lstrip("-").upper().replace("-", "_"))
    group.add_argument(*flags, dest=dest, help=help.replace("%", "%%") + shown, **kwargs)


def switch(group: ArgGroup, flag: str, *, dest: str, help: str, off: bool = False) -> None:
    """A flag without a value setting ``dest`` to True (``off``: to False); absent means the default."""
    group.add_argument(flag, dest=dest, action="store_false" if off else "store_true", default=None,
                       help=help.replace("%", "%%"))


def add_model_source_args(group: ArgGroup, *, weights_help: str, cfg_help: str,
                          trusted: str = "--weights") -> ArgGroup:
    """The flags every job uses to name its model: --weights, --cfg, --family, --trust-checkpoint."""
    setting(group, "--weights", settings=ModelSourceSettings, dest="weights", type=Path, help=weights_help)
    setting(group, "--cfg", settings=ModelSourceSettings, dest="cfg", help=cfg_help)
    setting(group, "--family", settings=ModelSourceSettings, dest="family",
            help="detector family, when it cannot be recognised from the file")
    switch(group, "--trust-checkpoint", dest="trust",
           help=f"allow arbitrary pickled code in {trusted} (only for files you trust)")
    return group


def settings_from_args(cls: type[S], args: argparse.Namespace, **values: Any) -> S:
    """The ``cls`` settings of the parsed flags (``values`` override them); unset flags keep the defaults."""
    names = {f.name for f in dataclasses.fields(cls)}
    parsed = {k: v for k, v in vars(args).items() if k in names}
    return cls.from_dict({**parsed, **values})


def format_models(models: dict[str, dict[str, Any]]) -> str:
    """A table of summary rows (``model_summary``), one per model, ratios against the first."""
    first = next(iter(models.values()))
    rows = []
    for name, s in models.items():
        speedup = (first.get("latency_ms") or 0) / s["latency_ms"] if s.get("latency_ms") else None
        rows.append([name, s["params_m"], s["gmacs"], first["gmacs"] / s["gmacs"], s.get("file_mib"),
                     s.get("latency_ms"), speedup])
    return format_table(rows, ["model", "params (M)", "GMACs", "MACs x", "size (MiB)", "CPU ms", "speed-up"])


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value)


def add_project_args(group: ArgGroup, *, default: Path, what: str) -> None:
    """``--project`` / ``--name`` as the official scripts name them: ``what`` goes into PROJECT/NAME."""
    group.add_argument("--project", type=Path, help=f"as the official scripts: {what} PROJECT/NAME "
                                                    f"(default: {default.parent})")
    group.add_argument("--name", help=f"folder under --project (default: {default.name})")


def project_folder(args: argparse.Namespace, default: Path) -> Path:
    """``--out``, else ``--project`` / ``--name`` (the official scripts' names), else ``default``."""
    if args.out is not None and (args.project is not None or args.name is not None):
        raise ValueError("pass either --out or --project/--name, not both")
    if args.out is not None:
        return Path(args.out)
    return (args.project or default.parent) / (args.name or default.name)
