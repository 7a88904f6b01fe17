"""Scorers by name: an explicit table of the built-ins, ``register_scorer`` for your own classes, and
the ``sglang_stop.scorers`` entry-point group for scorers that other packages install.

Built-ins are named as ``module:Class`` strings and imported on first use, so the scorer modules import
only ``scorers/base.py`` (no import circle) and ``import sglang_stop`` stays cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, TypeVar

from pydantic import ValidationError

from sglang_stop.errors import UserError, validation_message
from sglang_stop.scorers.base import Scorer

BUILTINS: dict[str, str] = {
    "none": "sglang_stop.scorers.heuristics:NoPruning",
    "random": "sglang_stop.scorers.heuristics:RandomScorer",
    "confidence": "sglang_stop.scorers.heuristics:ConfidenceScorer",
    "entropy": "sglang_stop.scorers.heuristics:EntropyScorer",
    "logprob": "sglang_stop.scorers.heuristics:LogprobScorer",
    "diversity": "sglang_stop.scorers.diversity:DiversityScorer",
    "verifier": "sglang_stop.scorers.verifier:VerifierScorer",
    "stop": "sglang_stop.scorers.stop.scorer:StopScorer",
}
ENTRY_POINT_GROUP = "sglang_stop.scorers"

_REGISTRY: dict[str, type[Scorer]] = {}
S = TypeVar("S", bound=type[Scorer])


def register_scorer(name: str) -> Callable[[S], S]:
    """Class decorator: make ``cls`` the scorer called ``name`` (config ``scorer.name``)."""

    def deco(cls: S) -> S:
        if name in BUILTINS or (name in _REGISTRY and _REGISTRY[name] is not cls):
            owner = BUILTINS.get(name) or _REGISTRY[name].__qualname__
            raise ValueError(f"scorer {name!r} is already registered by {owner}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _load(ref: str, name: str) -> type[Scorer]:
    module, _, attr = ref.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    if not (isinstance(cls, type) and issubclass(cls, Scorer)):
        raise UserError(f"scorer {name!r}: {ref} is not a Scorer subclass")
    cls.name = name
    return cls


def _third_party() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_scorers() -> list[str]:
    return sorted(set(BUILTINS) | set(_REGISTRY) | set(_third_party()))


def scorer_class(name: str) -> type[Scorer]:
    if name in _REGISTRY:
        return _REGISTRY[name]
    ref = BUILTINS.get(name) or _third_party().get(name)
    if ref is None:
        raise UserError(f"scorer.name: unknown scorer {name!r} (known: {', '.join(available_scorers())})")
    _REGISTRY[name] = cls = _load(ref, name)
    return cls


def make_scorer(name: str, options: dict[str, Any] | None = None) -> Scorer:
    """A scorer instance with validated options (a bad option is one UserError naming it)."""
    cls = scorer_class(name)
    try:
        opts = cls.Options.model_validate(options or {})
    except ValidationError as e:
        raise UserError(f"{validation_message(e, prefix='scorer.options.')} (scorer {name!r})") from None
    return cls(opts)
