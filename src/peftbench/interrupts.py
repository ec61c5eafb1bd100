"""Ctrl-C and SIGTERM (what job schedulers send) end a process the same way: one KeyboardInterrupt, then
further signals are ignored while it cleans up, so a second Ctrl-C cannot cut the cleanup short and print
a half traceback instead of the one-line message."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A stop signal, as KeyboardInterrupt so that every `except KeyboardInterrupt` handles it alike."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


_received: list[int] = []  # the stop signals this process has had


def _stop(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    for each in STOP_SIGNALS:
        signal.signal(each, signal.SIG_IGN)
    raise Interrupted(signum)


@contextmanager
def stop_signals() -> Iterator[None]:
    """Within: SIGINT and SIGTERM raise Interrupted once. The previous handlers come back afterwards (tests
    call main() many times in one process), except after a signal: the process is ending then, and a
    further signal must stay ignored until it has. Only the main thread may set handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {each: signal.getsignal(each) for each in STOP_SIGNALS}
    for each in STOP_SIGNALS:
        signal.signal(each, _stop)
    try:
        yield
    finally:
        if not _received:
            for each, handler in previous.items():
                signal.signal(each, handler)
