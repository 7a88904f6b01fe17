"""``mix:SPEC,SPEC,...``: problems of several tasks interleaved round-robin, and ``default``, the
documented mix where SmolLM2-135M is weak but not hopeless (docs/tasks.md)."""

from __future__ import annotations

import math

from sglang_stop.errors import UserError
from sglang_stop.tasks.base import Problem, Task, load_task, register_task, register_task_prefix


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


def interleave(per: list[list[Problem]], n: int) -> list[Problem]:
    """The first ``n`` of several lists taken round-robin (a mix's problem order)."""
    out = [lst[i] for i in range(max(map(len, per), default=0)) for lst in per if i < len(lst)]
    return out[:n]


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
        return interleave([c.problems(math.ceil(n / k), seed) for c in self.components], n)

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
