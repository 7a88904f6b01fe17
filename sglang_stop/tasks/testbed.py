"""``testbed``: the from-scratch arithmetic model's task. Its problems and answer format belong to
:mod:`sglang_stop.testbed.data` (which also trains and checks the model); this is the task view of them."""

from __future__ import annotations

from typing import ClassVar

from sglang_stop.tasks.answers import answers_match
from sglang_stop.tasks.base import Problem, Task, register_task
from sglang_stop.errors import UserError
from sglang_stop.testbed import asset_dir, data


class TestbedTask(Task):
    """Character-level chains: the model continues ``Q4-8-8=`` with ``4-8=-4;-4-8=-12;A-12``."""

    __test__: ClassVar[bool] = False  # not a pytest class
    default_prompt = "{question}"
    chat_template = False

    def __init__(self) -> None:
        super().__init__("testbed")

    splits = ("label", "eval")

    def problems(self, n: int, seed: int = 0) -> list[Problem]:
        return self.split_problems("eval", n, seed)

    def split_problems(self, split: str, n: int, seed: int = 0) -> list[Problem]:
        if split not in self.splits:
            raise UserError(f"split {split!r}: the testbed's splits are {', '.join(self.splits)}")
        out = []
        for d in data.make_problems(n, seed, split=split):  # type: ignore[arg-type]  # checked above
            extra = {k: v for k, v in d.items() if k not in ("id", "question", "answer")}
            out.append(
                Problem(id=str(d["id"]), question=d["question"], answer=str(d["answer"]), source=self.spec, metadata=extra)
            )
        return out

    def default_model(self) -> str | None:
        return str(asset_dir())

    def extract_answer(self, text: str) -> str | None:
        return data.extract_answer(text)

    def is_correct(self, problem: Problem, extracted: str | None) -> bool:
        return extracted is not None and answers_match(extracted, problem.answer)


register_task("testbed", TestbedTask)
