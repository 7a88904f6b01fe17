"""Signals as a cancel request: the first SIGINT/SIGTERM sets an event the runner polls, so decoding
stops within a step, every finished result is kept, and the command exits 130 / 143 with one line."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}

#: set by the first signal a run turns into a cancel; a command line's own handlers (cli_errors) then
#: absorb further signals, so a second Ctrl-C while the run reports cannot replace its summary line
STOPPING = threading.Event()


class CancelEvent(threading.Event):
    """An event that remembers which signal set it."""

    signal_name: str = "cancel"


@contextmanager
def cancel_on_signals() -> Iterator[CancelEvent]:
    """Within the block, SIGINT and SIGTERM set the yielded event instead of raising; repeated signals
    are absorbed (no KeyboardInterrupt traceback). Outside the main thread it installs nothing."""
    event = CancelEvent()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        if not event.is_set():
            event.signal_name = signal.Signals(signum).name
            STOPPING.set()
            event.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield event
    finally:
        for s, h in old.items():
            signal.signal(s, h)
