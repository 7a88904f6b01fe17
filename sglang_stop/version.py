"""The package version (its own module, so the lowest layers can read it without the package root)."""

from __future__ import annotations

__version__ = "0.1.0"
