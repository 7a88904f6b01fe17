"""A tiny from-scratch arithmetic-chain model whose early mistakes are visible in the prefix.

It is the CPU testbed for STOP: a wrong step like ``5+3=9;`` dooms a chain, so a learned scorer that
reads the prefix can beat confidence, while the whole model trains on a CPU (a first version in
minutes; the committed 8-layer one in about 1.6 hours, recipe in docs/stop-scorer.md).
"""

from __future__ import annotations

from pathlib import Path


def asset_dir() -> Path:
    """The committed testbed model (HF dir: weights + tokenizer)."""
    return Path(__file__).resolve().parent.parent / "assets" / "testbed"


def stop_asset_dir() -> Path:
    """The committed STOP checkpoint trained for the testbed model."""
    return Path(__file__).resolve().parent.parent / "assets" / "testbed-stop"
