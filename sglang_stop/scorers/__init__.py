"""Scoring hooks: the registry and the built-in scorers (heuristics, STOP, external verifiers)."""

from __future__ import annotations

from sglang_stop.scorers.base import Branch, ScoreContext, Scorer, ScorerOptions
from sglang_stop.scorers.registry import available_scorers, make_scorer, register_scorer, scorer_class

__all__ = [
    "Branch",
    "ScoreContext",
    "Scorer",
    "ScorerOptions",
    "available_scorers",
    "make_scorer",
    "register_scorer",
    "scorer_class",
]
