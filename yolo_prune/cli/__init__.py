"""``yolo-prune``: one sub-command per job; each parses its flags into a settings object and makes one call.

Every command is a module of this package with ``HELP`` (one line), ``add_arguments(parser)``
and ``run(args)`` (and, optionally, ``interrupted_hint(args)``: what to do after Ctrl-C); this
file lists them, configures logging once and turns every error into one line on stderr:
exit 2 for an error the message explains, 1 for an internal error, 130 / 143 for SIGINT /
SIGTERM (``--debug`` or ``YOLO_PRUNE_DEBUG=1`` shows the traceback instead).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import logging
import os
import shlex
import signal
import sys
import warnings
from types import ModuleType
from typing import Any, Iterator, Sequence

from yolo_prune.interrupts import Interrupted, termination_as_interrupt

# command -> module (imported only when chosen: keeps start-up short)
COMMANDS: dict[str, str] = {
    "run": "yolo_prune.cli.run",
    "prune": "yolo_prune.cli.prune",
    "finetune": "yolo_prune.cli.finetune",
    "eval": "yolo_prune.cli.eval",
    "make-synthetic": "yolo_prune.cli.make_synthetic",
    "sensitivity": "yolo_prune.cli.sensitivity",
    "report": "yolo_prune.cli.report",
    "yolo-txt-to-coco": "yolo_prune.cli.convert",
    "predict": "yolo_prune.cli.predict",
    "export": "yolo_prune.cli.export",
    "benchmark": "yolo_prune.cli.benchmark",
}
# Loggers of the library (``yolo_prune``) and of the YOLOv7 module tree (``models``).
LOGGERS = ("yolo_prune", "models")
# Errors a user can fix from the message alone: one line, no traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, KeyError, RuntimeError, OSError)
DEBUG_HELP = "show the full traceback of an error (also: YOLO_PRUNE_DEBUG=1)"


class _CliHandler(logging.StreamHandler):
    """The one handler the command line adds (configuring twice replaces it, never doubles it).

    It writes to whatever ``sys.stderr`` is when a message comes (as ``logging.lastResort`` does),
    so a caller that swaps stderr, such as a test capturing it, gets the messages.
    """

    @property
    def stream(self) -> Any:
        """The current ``sys.stderr``."""
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        """Ignored: the stream is always the current ``sys.stderr``."""


def configure_logging(*, quiet: bool = False) -> None:
    """Library messages to stderr: INFO and above, WARNING and above with ``quiet``."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if isinstance(h, _CliHandler)]:
            logger.removeHandler(handler)
        handler = _CliHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING if quiet else logging.INFO)


def command_module(name: str) -> ModuleType:
    """The module of command ``name``."""
    return importlib.import_module(COMMANDS[name])


def build_parser(commands: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``yolo-prune`` parser with the sub-commands ``commands`` (default: all)."""
    parser = argparse.ArgumentParser(prog="yolo-prune", description=__doc__.splitlines()[0])
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in commands or COMMANDS:
        module = command_module(name)
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        command.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                             help="only warnings and errors on stderr")
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
        module.add_arguments(command)
    return parser


@contextlib.contextmanager
def quiet_output(quiet: bool) -> Iterator[None]:
    """While ``quiet``: standard output (tables, paths) is dropped and tqdm bars are off; stderr stays."""
    if not quiet:
        yield
        return
    previous = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"  # tqdm reads its defaults from TQDM_* variables
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        if previous is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = previous


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; returns the exit status (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = [a for a in argv if not a.startswith("-")][:1]
    args = build_parser(chosen if chosen and chosen[0] in COMMANDS else None).parse_args(argv)
    args.command_line = shlex.join(["yolo-prune", *argv])  # reports show it in full
    configure_logging(quiet=args.quiet)
    debug = bool(args.debug or os.environ.get("YOLO_PRUNE_DEBUG"))
    try:
        with quiet_output(args.quiet), _warnings_as_lines(), termination_as_interrupt():
            command_module(args.command).run(args)
    except KeyboardInterrupt as err:
        if debug:
            raise
        signum = err.signum if isinstance(err, Interrupted) else signal.SIGINT
        print(f"yolo-prune {args.command}: interrupted ({signal.Signals(signum).name}); {_interrupted_hint(args)}",
              file=sys.stderr)
        return 128 + signum
    except Exception as err:  # every error ends as one line; --debug shows the traceback
        if debug:
            raise
        print(f"yolo-prune {args.command}: error: {error_line(err)}", file=sys.stderr)
        return 2 if isinstance(err, USER_ERRORS) else 1
    return 0


def error_line(err: BaseException) -> str:
    """The one line a user sees for ``err`` (an unexpected error says how to see and report it)."""
    from yolo_prune.io.errors import describe_os_error  # lazily: keeps ``--help`` free of torch

    if isinstance(err, OSError):
        text = describe_os_error(err)
    elif isinstance(err, USER_ERRORS):
        text = str(err)
    else:
        text = (f"internal error {type(err).__name__}: {err}; rerun with --debug to see the traceback, and "
                f"please report it")
    return " ".join(text.split()) or type(err).__name__


def _interrupted_hint(args: argparse.Namespace) -> str:
    default = "outputs are written atomically, so nothing half-written was left; run the command again"
    hint = getattr(command_module(args.command), "interrupted_hint", None)
    try:
        return hint(args) if hint is not None else default
    except (ValueError, OSError):  # flags the command had not checked yet when interrupted
        return default


@contextlib.contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """Library warnings (skipped images, repaired boxes ...) as one ``warning: ...`` line each."""
    def show(message: Warning | str, *_: Any, **__: Any) -> None:
        print(f"warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


