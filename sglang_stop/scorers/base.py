"""The scoring-hook extension point: a small ABC plus a name registry (like optuna's BasePruner).

The program calls ``score`` once per prune point with every surviving branch. A scorer that needs
model internals (the STOP scorer reads the prefix KV cache) asks ``ctx.backend``; everything else
(token ids, per-token logprobs, entropies) is on the :class:`Branch` view itself, so one scorer
serves the in-process backend and a real SGLang server alike.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from sglang_stop.errors import UserError


@dataclass
class Branch:
    """What a scorer sees of one path at a prune point."""

    index: int  # position in the original fork, 0..N-1 (stable across stages)
    prompt_ids: list[int]
    generated_ids: list[int]
    text: str  # generated text so far
    logprobs: list[float]  # log p(chosen token), one per generated token (temperature 1)
    top_logprobs: list[list[float]]  # top-k log p per generated token, descending
    entropies: list[float]  # entropy (nats) of the full next-token distribution per generated token
    handle: Any = None  # backend-owned; pass back to backend methods (e.g. prefix KV access)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def token_ids(self) -> list[int]:
        return self.prompt_ids + self.generated_ids


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


_REGISTRY: dict[str, type[Scorer]] = {}
S = TypeVar("S", bound=type[Scorer])


def register_scorer(name: str) -> Callable[[S], S]:
    def deco(cls: S) -> S:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"scorer {name!r} is already registered by {_REGISTRY[name].__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _load_builtins() -> None:
    # Importing the modules registers them; kept lazy so `import sglang_stop` stays cheap.
    import sglang_stop.scorers.heuristics  # noqa: F401

    try:
        import sglang_stop.scorers.stop  # noqa: F401
    except ImportError:
        pass


def available_scorers() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def scorer_class(name: str) -> type[Scorer]:
    _load_builtins()
    if name not in _REGISTRY:
        raise UserError(f"scorer.name: unknown scorer {name!r} (known: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name]


def make_scorer(name: str, options: dict[str, Any] | None = None) -> Scorer:
    cls = scorer_class(name)
    try:
        opts = cls.Options.model_validate(options or {})
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise UserError(f"scorer.options.{loc}: {err['msg']} (scorer {name!r})") from None
    return cls(opts)
