"""Arithmetic chains (``Q4-8-8=4-8=-4;-4-8=-12;A-12``), a hash-based split, and an oracle checker.

Every question falls in one split by the hash of its text, so the model never trains on a question
used for STOP labels or for evaluation, whatever the seeds:
``train`` (80%) trains the language model, ``label`` (10%) makes STOP's Monte Carlo labels, and
``eval`` (10%, the held-out default of :func:`make_problems`) is for benchmarks and AUC figures.
"""

from __future__ import annotations

import hashlib
import random
import re
from typing import Literal

Split = Literal["train", "label", "eval"]
MIN_OPERANDS, MAX_OPERANDS = 4, 6
ANSWER_RE = re.compile(r"A(-?\d+)")


def split_of(question: str) -> Split:
    h = int(hashlib.sha256(question.encode()).hexdigest()[:8], 16) % 100
    return "train" if h < 80 else ("label" if h < 90 else "eval")


def random_question(rng: random.Random) -> str:
    n = rng.randint(MIN_OPERANDS, MAX_OPERANDS)
    parts = [str(rng.randint(1, 9))]
    for _ in range(n - 1):
        parts.append(rng.choice("+-") + str(rng.randint(1, 9)))
    return "Q" + "".join(parts) + "="


def parse_question(question: str) -> tuple[int, list[tuple[str, int]]]:
    """``Q4-8+3=`` -> (4, [('-', 8), ('+', 3)])."""
    m = re.fullmatch(r"Q(\d)((?:[+-]\d)+)=", question)
    if not m:
        raise ValueError(f"not a testbed question: {question!r}")
    ops = [(s[0], int(s[1])) for s in re.findall(r"[+-]\d", m.group(2))]
    return int(m.group(1)), ops


def solution(question: str) -> str:
    """The correct completion: one ``x op y=z;`` step per operator, then ``A<answer>``."""
    acc, ops = parse_question(question)
    steps = []
    for op, y in ops:
        new = acc + y if op == "+" else acc - y
        steps.append(f"{acc}{op}{y}={new};")
        acc = new
    return "".join(steps) + f"A{acc}"


def written_solution(
    question: str, rng: random.Random, sloppy: bool, error_rate: float, abstain_rate: float = 0.0
) -> str:
    """A chain as a writer produces it: a sloppy writer gets each result wrong with ``error_rate``
    (off by 1-3) and carries the wrong value on, so one slip dooms the answer. A writer who slipped
    ends with a bare ``A`` (no answer: "I went wrong somewhere") with ``abstain_rate``.

    Training the language model on careful AND sloppy writers (as real text mixes both) makes "has
    this text gone wrong?" part of its state: it needs that to predict how likely the next slip is.
    A model trained on perfect chains only has no such state, and a scorer reading its KV cache has
    nothing to find (measured: docs/stop-scorer.md). Sloppiness alone did not make the state strong;
    abstaining gives the model a direct reason to carry "I slipped" from the slip to the end, as real
    reasoning text does when a writer admits being unsure.
    """
    acc, ops = parse_question(question)
    steps, slipped = [], False
    for op, y in ops:
        new = acc + y if op == "+" else acc - y
        if sloppy and rng.random() < error_rate:
            new += rng.choice([-3, -2, -1, 1, 2, 3])
            slipped = True
        steps.append(f"{acc}{op}{y}={new};")
        acc = new
    # No draw unless it can matter: earlier recipes keep their random stream.
    abstain = slipped and abstain_rate > 0 and rng.random() < abstain_rate
    return "".join(steps) + ("A" if abstain else f"A{acc}")


def answer_of(question: str) -> str:
    return solution(question).rsplit("A", 1)[1]


def problem_id(question: str) -> str:
    return "tb-" + hashlib.sha256(question.encode()).hexdigest()[:10]


def sample_questions(n: int, seed: int, split: Split) -> list[str]:
    """``n`` distinct questions of one split, deterministic in ``seed``."""
    rng = random.Random(f"{split}:{seed}")
    seen: dict[str, None] = {}
    tries = 0
    while len(seen) < n:
        q = random_question(rng)
        tries += 1
        if split_of(q) == split:
            seen.setdefault(q)
        if tries > 1000 * (n + 10):
            raise RuntimeError(f"could not draw {n} distinct {split} questions")
    return list(seen)


def make_problems(n: int, seed: int, split: Split = "eval") -> list[dict]:
    """Problems ``{id, question, answer}`` from the held-out split (``eval``) by default."""
    return [
        {"id": problem_id(q), "question": q, "answer": answer_of(q)} for q in sample_questions(n, seed, split)
    ]


def extract_answer(text: str) -> str | None:
    m = ANSWER_RE.search(text)
    return m.group(1) if m else None


_STEP_RE = re.compile(r"(-?\d+)([+-])(\d)=(-?\d+)")


def check_steps(text: str) -> bool:
    """Oracle: is everything written so far right?

    With the question in front (``Q4-8-8=4-8=-4;-4-``) the format makes the right completion unique,
    so the check is "the text is a prefix of it" (arithmetic, chaining and copied operands). Without
    it, every complete step's arithmetic and chaining are checked, and a final ``A<n>`` must equal
    the last result; a trailing partial step is not judged.
    """
    if text.startswith("Q"):
        q, sep, rest = text.partition("=")
        try:
            return solution(q + sep).startswith(rest)
        except ValueError:
            return False
    body, has_answer, ans = text.partition("A")
    chunks = body.split(";")
    acc: int | None = None
    for step in chunks[:-1]:
        m = _STEP_RE.fullmatch(step)
        if not m:
            return False
        x, op, y, z = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
        if (acc is not None and x != acc) or z != (x + y if op == "+" else x - y):
            return False
        acc = z
    if has_answer:
        return chunks[-1] == "" and acc is not None and ans.rstrip() in (str(acc), str(acc)[: len(ans.rstrip())])
    return True
