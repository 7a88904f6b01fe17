"""reasoning-gym datasets as tasks: ``chain_sum:min_terms=2,operators=+|-`` with its options typed by the
dataset's config dataclass and checked before any work. reasoning-gym itself is imported only when a
spec needs it (its import takes seconds)."""

from __future__ import annotations

import collections.abc
import dataclasses
import hashlib
import types
import typing
from typing import Any, ClassVar

from sglang_stop.errors import UserError
from sglang_stop.tasks.base import Problem, Task, register_task_fallback


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


def _resolve(spec: str) -> ReasoningGymTask | None:
    name, sep, arg = spec.partition(":")
    if name not in _rg_names():
        return None
    return ReasoningGymTask(name, _parse_kwargs(arg, spec) if sep else {})


register_task_fallback("<reasoning-gym name>[:k=v,...] (chain_sum, basic_arithmetic, gsm_symbolic, ...)", _resolve)
