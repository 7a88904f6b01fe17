"""Battery rows: server."""

from __future__ import annotations

from tests.battery import Case

ROWS: list[Case] = []
