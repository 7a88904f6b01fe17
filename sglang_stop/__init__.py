"""sglang-stop: learned early pruning of parallel reasoning paths (STOP) on stock SGLang."""

from __future__ import annotations

__version__ = "0.1.0"
