"""SIGTERM and SIGINT: stop the run before its next request, cleanly (docs/behaviour.md "Safety").

A deleted pod, a Job's deadline or Ctrl-C must still end in one
``reconcile_finished`` line, a termination message and exit 128+N. The
handler records the signal; the run raises :class:`Interrupted` at its next
request boundary (:func:`check`), or at once while it only waits on the
network or a backoff sleep (:func:`blocking`), where nothing is half done.

Installed explicitly for both signals because the defaults fail us: SIGTERM
kills without a word (and as PID 1 in a container, where the kernel ignores a
signal without a handler, it does nothing at all), and SIGINT prints a
KeyboardInterrupt traceback.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from lib.exitcodes import Interrupted

SIGNALS = (signal.SIGTERM, signal.SIGINT)

_state: dict[str, Any] = {"signum": None, "blocking": 0}


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    if _state["signum"] is None:
        _state["signum"] = signum
    if _state["blocking"]:
        raise Interrupted(signum)


@contextmanager
def installed() -> Iterator[None]:
    """Handle SIGTERM and SIGINT for the duration of one run (main thread only)."""
    _state.update(signum=None, blocking=0)
    if threading.current_thread() is not threading.main_thread():
        yield  # tests run the reconciler in threads: signals only reach the main one
        return
    previous = {s: signal.signal(s, _on_signal) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def pending() -> int | None:
    """The signal received so far in this run, if any."""
    signum: int | None = _state["signum"]
    return signum


def check() -> None:
    """Raise :class:`Interrupted` if a signal arrived: call before each request."""
    signum = pending()
    if signum is not None:
        raise Interrupted(signum)


@contextmanager
def blocking() -> Iterator[None]:
    """Mark a wait (a request in flight, a backoff sleep) a signal may cut short."""
    check()
    _state["blocking"] += 1
    try:
        yield
    finally:
        _state["blocking"] -= 1
