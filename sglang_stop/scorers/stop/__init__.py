"""The ``stop`` scorer and everything it owns: the [STOP]-token network (``net``), its checkpoint in the
authors' release layout (``checkpoint``) and the scorer itself (``scorer``).

One package so inference never imports from ``training/``: training, benchmarks and the testbed import
the network and the checkpoint from here; the converter (``srt/convert.py``) reads the checkpoint's files
with ``checkpoint``'s own readers.
"""

from __future__ import annotations

from sglang_stop.scorers.stop.checkpoint import BaseModelInfo, check_base_model, load_checkpoint, save_checkpoint
from sglang_stop.scorers.stop.net import DEFAULT_TARGETS, StopNet, StopNetConfig, decoder_of
from sglang_stop.scorers.stop.scorer import StopOptions, StopScorer

__all__ = [
    "DEFAULT_TARGETS",
    "BaseModelInfo",
    "StopNet",
    "StopNetConfig",
    "StopOptions",
    "StopScorer",
    "check_base_model",
    "decoder_of",
    "load_checkpoint",
    "save_checkpoint",
]
