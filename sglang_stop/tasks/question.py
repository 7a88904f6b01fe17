"""A caller's own question: a task's prompt and answer format without grading."""

from __future__ import annotations

from sglang_stop.tasks.base import Problem, Task

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
