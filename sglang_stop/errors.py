"""User-facing errors: the CLIs print these as one line and exit non-zero, never a traceback; and the
one way a command warns (``warn``: one ``warning: ...`` line on stderr, the run goes on)."""

from __future__ import annotations

import json
import sys
from typing import Any

from pydantic import ValidationError


def warn(msg: str) -> None:
    """One line on stderr for input that is accepted but partly ignored; every command warns through here."""
    print(f"warning: {msg}", file=sys.stderr, flush=True)


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


def _shown(value: Any) -> str:
    try:
        text = json.dumps(value, default=str)
    except ValueError:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validation_message(err: ValidationError, source: str | None = None, *, prefix: str = "",
                       unknown: str = "unknown key", missing: str = "Field required") -> str:
    """Every error of a pydantic validation in one line: ``source: prefix.loc: msg; ...`` (the one
    formatter of the CLIs' ``error:`` lines and serve's error messages). A type error shows the value
    given, so ``n: true`` reads "Input should be a valid integer (got true)"; ``unknown``/``missing`` are
    what an unknown or a missing key is told (each front end names its own field list)."""
    parts = []
    for e in err.errors():
        loc = prefix + ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = unknown
        elif e["type"] == "missing":
            msg = missing
        elif e["type"].endswith("_type") or e["type"] in ("literal_error", "int_from_float"):
            msg += f" (got {_shown(e.get('input'))})"
        if msg.startswith(f"{loc}: "):  # a model validator's message names its own field
            loc = ""
        parts.append(f"{loc + ': ' if loc else ''}{msg}")
    joined = "; ".join(" ".join(p.split()) for p in parts)
    return f"{source}: {joined}" if source else joined
