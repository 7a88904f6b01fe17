"""User-facing errors: the CLIs print these as one line and exit non-zero, never a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (file, flag, field); the message must name what is wrong."""


class RunCancelled(Exception):
    """Raised inside a run's program threads when the run is stopped (a signal, or another problem's
    error): not a failure of its own, so runners ignore it when they report."""


class RunInterrupted(Exception):
    """A run stopped early by a signal; every problem finished before it was kept."""

    def __init__(self, signal_name: str, done: int, total: int, hint: str = "") -> None:
        msg = f"interrupted by {signal_name} after {done} of {total} problems"
        super().__init__(f"{msg}; {hint}" if hint else msg)
        self.signal_name = signal_name
        self.done = done
        self.total = total
        self.hint = hint


def positive_ints(flag: str, text: str) -> list[int]:
    """``"16,32,64"`` -> [16, 32, 64] for a comma-separated option; anything else is one UserError
    naming the flag (every such option of every command parses through here)."""
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        vals = []
    if not vals or min(vals) < 1:
        raise UserError(f"{flag}: expected comma-separated positive integers, got {text!r}")
    return vals
