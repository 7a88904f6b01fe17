"""User-facing errors: the CLIs print these as one line and exit non-zero, never a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (file, flag, field); the message must name what is wrong."""
