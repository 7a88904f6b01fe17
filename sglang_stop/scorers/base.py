"""The scoring-hook extension point: a small ABC (like optuna's BasePruner); the name registry is
``scorers/registry.py``. This module is a leaf: scorers import it, it imports no scorer.

The program calls ``score`` once per prune point with every surviving branch. A scorer that needs
model internals (the STOP scorer reads the prefix KV cache) asks ``ctx.backend``; everything else
(token ids, per-token logprobs, entropies) is on the :class:`Branch` view itself, so one scorer
serves the in-process backend and a real SGLang server alike.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from sglang_stop.backends.base import Branch
from sglang_stop.errors import UserError

__all__ = ["Branch", "ScoreContext", "Scorer", "ScorerOptions"]


@dataclass
class ScoreContext:
    backend: Any  # the SGLang backend running the program (LocalBackend, StopEndpoint, ...)
    rng: random.Random
    stage: int = 0
    prefix_len: int = 0
    question: str | None = None
    problem_key: str = ""  # identifies the problem (scorers shared by concurrent programs key on it)


class ScorerOptions(BaseModel):
    """Base for per-scorer options; unknown keys are errors, and values are not coerced (``true`` is
    not 1, ``"8"`` is not 8)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Scorer(ABC):
    """Higher score = more likely to end correct. Subclasses set ``name`` and ``Options``."""

    name: ClassVar[str] = ""
    prunes: ClassVar[bool] = True  # False: the program never prunes (the `none` baseline)
    nonnegative: ClassVar[bool] = False  # scores are >= 0, so they can weight votes
    Options: ClassVar[type[ScorerOptions]] = ScorerOptions

    def __init__(self, options: ScorerOptions | None = None) -> None:
        self.options = options if options is not None else self.Options()

    def prepare(self, backend: Any) -> None:
        """Check (and load) everything this scorer needs from ``backend`` before any decoding starts,
        so a bad checkpoint or option fails in seconds, not after the model has decoded. Raises
        UserError. Called once by the runner; the default needs nothing."""

    @abstractmethod
    def score(self, branches: Sequence[Branch], ctx: ScoreContext) -> list[float]:
        """One float per branch, same order."""
