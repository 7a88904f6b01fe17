"""What every problem source is: a ``Problem``, the ``Task`` interface, and the registry of spec names
that :func:`load_task` resolves (each source module registers its own names)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from sglang_stop.config import prompt_template_problem
from sglang_stop.errors import UserError
from sglang_stop.tasks.answers import extract_answer

# Makes SmolLM2-135M write a reasoning path (~60-90 tokens) before its answer. The terser
# "Solve the problem step by step. End with a final line ..." makes it answer at once (~7-15 tokens),
# leaving nothing to prune. Measured in docs/tasks.md.
REASONING_PROMPT = (
    "{question}\n\nThink step by step and explain your reasoning. "
    "Then finish with 'The answer is N', where N is the final number."
)


class Problem(BaseModel):
    id: str
    question: str
    answer: str
    source: str = Field(description="spec of the task that made it; a mix dispatches scoring on it")
    metadata: dict[str, Any] = Field(default_factory=dict, description="reasoning-gym entry metadata, ...")


class Task(ABC):
    """A problem source plus how to prompt for, extract and check its answers."""

    default_prompt: str = REASONING_PROMPT
    chat_template: bool = True
    last_number_fallback: bool = False  # see extract_answer

    def __init__(self, spec: str) -> None:
        self.spec = spec

    #: named pools a task can draw from (the testbed's ``label``/``eval``: STOP is trained on one, judged
    #: on the other); empty for a task with one pool
    splits: tuple[str, ...] = ()

    @abstractmethod
    def problems(self, n: int, seed: int = 0) -> list[Problem]: ...

    def split_problems(self, split: str, n: int, seed: int = 0) -> list[Problem]:
        """``n`` problems of one of :attr:`splits` (a task without splits has none to give)."""
        raise UserError(f"split {split!r}: task {self.spec!r} has no splits")

    def default_model(self) -> str | None:
        """The model this task's problems are made for, when the caller names none (None: the embedded
        default); the testbed's own model, say."""
        return None

    def extract_answer(self, text: str) -> str | None:
        return extract_answer(text, last_number_fallback=self.last_number_fallback)

    @abstractmethod
    def is_correct(self, problem: Problem, extracted: str | None) -> bool: ...

    def format_prompt(self, question: str, prompt: str | None = None) -> str:
        """``prompt`` (default: the task's) with the question in; a bad template is a UserError."""
        template = prompt if prompt is not None else self.default_prompt
        problem = prompt_template_problem(template)
        if problem:
            raise UserError(f"prompt: {problem}")
        return template.format(question=question)

    def check(self, problem: Problem, text: str) -> tuple[str | None, bool]:
        """Extract from a generated path and score it: ``(answer, correct)``."""
        ans = self.extract_answer(text)
        return ans, self.is_correct(problem, ans)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


_NAMED: dict[str, Callable[[], Task]] = {}
_PREFIXED: dict[str, Callable[[str], Task]] = {}
_FALLBACKS: list[tuple[str, Callable[[str], Task | None]]] = []


def register_task(name: str, factory: Callable[[], Task]) -> None:
    """Register an exact task name (``default``, ``testbed``)."""
    _NAMED[name] = factory


def register_task_prefix(prefix: str, factory: Callable[[str], Task]) -> None:
    """Register a ``prefix:ARG`` family (``mix``, ``mmath``); the factory gets ``ARG``."""
    _PREFIXED[prefix] = factory


def register_task_fallback(form: str, resolve: Callable[[str], Task | None]) -> None:
    """Register a family no name or prefix claims (``FILE.jsonl``, a reasoning-gym name), tried in
    registration order: ``resolve`` returns None for a spec not of its family. ``form`` is how
    :func:`known_tasks` shows it. A cheap check goes first (reasoning-gym's import is slow)."""
    _FALLBACKS.append((form, resolve))


def known_tasks() -> list[str]:
    """Human-readable forms of every accepted spec, for errors and ``--help``."""
    return [*sorted(_NAMED), *(f"{p}:..." for p in sorted(_PREFIXED)), *(form for form, _ in _FALLBACKS)]


def load_task(spec: str) -> Task:
    spec = spec.strip()
    if spec in _NAMED:
        return _NAMED[spec]()
    prefix, sep, arg = spec.partition(":")
    if sep and prefix in _PREFIXED:  # before the fallbacks: `mix:a.jsonl,b.jsonl` is a mix
        return _PREFIXED[prefix](arg)
    for _, resolve in _FALLBACKS:
        task = resolve(spec)
        if task is not None:
            return task
    raise UserError(f"unknown task '{spec}' (known: {', '.join(known_tasks())})")
