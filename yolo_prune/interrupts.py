"""Interrupts that are not lost: a signal whose exception CPython swallowed in a finalizer is sent again.

A Python signal handler runs at whatever bytecode the main thread is executing, also inside a
weakref callback or a ``__del__``. An exception raised there (the ``KeyboardInterrupt`` of Ctrl-C,
the interrupt a SIGTERM handler raises) cannot propagate: CPython prints "Exception ignored in ..."
and carries on, so a training run that was told to stop keeps training. ``interrupts_not_lost``
catches such an exception in ``sys.unraisablehook`` and sends the same signal again a moment later,
from a helper thread, so that it arrives once the finalizer has returned. ``termination_as_interrupt``
adds SIGTERM (as ``Interrupted``) to what stops a block the way Ctrl-C does.

    >>> with termination_as_interrupt():
    ...     train()  # Ctrl-C / SIGTERM stop it, also when they land in a finalizer
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Any, Iterator

REDELIVERY_DELAY_S = 0.05  # long enough for the finalizer that swallowed it to return


class Interrupted(KeyboardInterrupt):
    """A termination signal (SIGTERM) delivered as an interrupt, so cleanups run as for Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def termination_as_interrupt() -> Iterator[None]:
    """SIGTERM raises ``Interrupted`` (as SIGINT raises ``KeyboardInterrupt``) within the block.

    Neither is lost in a finalizer (``interrupts_not_lost``). Outside the main thread, which alone
    gets signals, it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        with interrupts_not_lost():
            yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def interrupts_not_lost() -> Iterator[None]:
    """Within the block, an interrupt swallowed by a finalizer is delivered again (main thread only)."""
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            previous(unraisable)
            return
        signum = int(getattr(unraisable.exc_value, "signum", signal.SIGINT))  # Ctrl-C: a bare KeyboardInterrupt
        threading.Timer(REDELIVERY_DELAY_S, os.kill, (os.getpid(), signum)).start()

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous
