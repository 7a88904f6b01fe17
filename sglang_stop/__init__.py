"""sglang-stop: learned early pruning of parallel reasoning paths (STOP) on stock SGLang."""

from __future__ import annotations

from sglang_stop.version import __version__


def __getattr__(name: str) -> object:
    """``sglang_stop.solve``: imported on first use, so ``import sglang_stop`` stays cheap."""
    if name in ("solve", "SolveResult"):
        from sglang_stop import api

        return getattr(api, name)
    raise AttributeError(f"module 'sglang_stop' has no attribute {name!r}")


__all__ = ["__version__", "solve", "SolveResult"]
