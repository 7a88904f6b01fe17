"""Battery rows: training."""

from __future__ import annotations

from tests.battery import Case

ROWS: list[Case] = []
