"""``reasoner``: the task mix the fine-tuned SmolLM2 reasoner (``--model smollm2-reasoner``) is made for,
and the written step-by-step solutions it was trained on.

Three reasoning-gym families whose steps can be written from the item itself: ``chain_sum`` and
``basic_arithmetic`` (one line per operation, in evaluation order) and the word problem ``leg_counting``
(one product per animal, then the running sum). Every line feeds the next, so a slip in an early line
dooms the answer and stays visible in the prefix: what a pruning signal can read.

Splits keep the pools apart: reasoning-gym seeds item ``i`` with ``seed + i``, so pools start far apart
(``train`` for fine-tuning the reasoner, ``label`` for STOP's Monte Carlo labels, ``eval`` for every
held-out figure). ``problems(n, seed)`` is the eval pool, as for the testbed.
"""

from __future__ import annotations

import ast
import math
import operator
import re

from sglang_stop.errors import UserError
from sglang_stop.models import REASONER_NAME
from sglang_stop.tasks.base import Problem, register_task
from sglang_stop.tasks.mix import MixTask, interleave, load_mix

# One spec per family; the difficulty that puts the fine-tuned 135M model's per-path accuracy near 0.5.
FAMILIES = (
    "chain_sum:min_terms=3,max_terms=5,min_digits=1,max_digits=2",
    "basic_arithmetic:min_terms=3,max_terms=4,min_digits=1,max_digits=1,operators=+|-|*",
    "leg_counting:min_animals=2,max_animals=3,min_instances=1,max_instances=6",
)

# First reasoning-gym seed of each pool (pools of up to 40k problems never overlap), and the distance
# between two families' seeds within a pool.
SPLIT_SEEDS = {"train": 1, "label": 50_000, "eval": 100_000}
FAMILY_SEED_STRIDE = 1_000_000

_OPS = {ast.Add: ("+", operator.add), ast.Sub: ("-", operator.sub), ast.Mult: ("*", operator.mul)}


def _arith_lines(expression: str) -> tuple[list[str], int]:
    """``a op b = c`` for every operation of ``expression`` in evaluation order, and its value."""
    lines: list[str] = []

    def ev(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            a, b = ev(node.left), ev(node.right)
            sym, fn = _OPS[type(node.op)]
            value = fn(a, b)
            lines.append(f"{a} {sym} {b} = {value}")
            return value
        raise ValueError(f"cannot write steps for {ast.dump(node)}")

    value = ev(ast.parse(expression.strip().rstrip("="), mode="eval").body)
    return lines, value


def _leg_lines(animals: dict[str, int]) -> tuple[list[str], int]:
    from reasoning_gym.arithmetic.leg_counting import ANIMALS

    lines, products = [], []
    for name, count in animals.items():
        legs = ANIMALS[name]
        lines.append(f"{count} {name}: {count} * {legs} = {count * legs} legs")
        products.append(count * legs)
    total = products[0]
    for p in products[1:]:
        lines.append(f"{total} + {p} = {total + p}")
        total += p
    return lines, total


def solution(problem: Problem) -> str:
    """The written solution of a problem of one of :data:`FAMILIES`: its steps, then ``The answer is N``.
    It must reach the dataset's own answer (a ValueError otherwise: the steps would teach a wrong sum)."""
    meta = problem.metadata
    family = meta.get("source_dataset")
    if family in ("chain_sum", "basic_arithmetic"):
        lines, value = _arith_lines(str(meta["expression"]))
    elif family == "leg_counting":
        lines, value = _leg_lines(dict(meta["animals"]))
    else:
        raise ValueError(f"problem {problem.id}: no written steps for family {family!r}")
    if str(value) != problem.answer.strip():
        raise ValueError(f"problem {problem.id}: steps reach {value}, the dataset says {problem.answer}")
    return "\n".join([*lines, f"The answer is {value}"])


_ARITH_LINE = re.compile(r"^(-?\d+) ([+\-*]) (-?\d+) = (-?\d+)$")
_LEG_LINE = re.compile(r"^(\d+) [^:]+: (\d+) \* (\d+) = (\d+) legs$")
_APPLY = {"+": operator.add, "-": operator.sub, "*": operator.mul}


def written_slip(problem_id: str, text: str) -> bool:
    """Does a finished line (one followed by a newline) of this generated text show a slip? A line of the
    :func:`solution` format that is wrong on its own (``12 - 98 = -76``), or, in a chain sum (written left
    to right), one whose first operand is not the previous line's result. Reads the text alone: what any
    reader of a prefix can at best see, so the ceiling of a prefix scorer (``bench signals`` row)."""
    chain = problem_id.startswith("chain_sum")
    prev = None
    for line in (ln.strip() for ln in text.split("\n")[:-1]):  # the last piece is unfinished
        if m := _ARITH_LINE.match(line):
            a, c = int(m[1]), int(m[4])
            if _APPLY[m[2]](a, int(m[3])) != c or (chain and prev is not None and a != prev):
                return True
            prev = c
        elif m := _LEG_LINE.match(line):
            n, n2, legs, total = (int(m[i]) for i in range(1, 5))
            if n != n2 or n * legs != total:
                return True
    return False


class ReasonerTask(MixTask):
    """The three families round-robin, with disjoint train/label/eval pools."""

    splits = ("train", "label", "eval")

    def __init__(self) -> None:
        mix = load_mix(",".join(FAMILIES))
        super().__init__("reasoner", mix.components)

    def problems(self, n: int, seed: int = 0) -> list[Problem]:
        return self.split_problems("eval", n, seed)

    def split_problems(self, split: str, n: int, seed: int = 0) -> list[Problem]:
        if split not in SPLIT_SEEDS:
            raise UserError(f"split {split!r}: the reasoner task's splits are {', '.join(self.splits)}")
        # each family from its own seed: reasoning-gym's families share a generator layout, so one seed
        # would give chain_sum and basic_arithmetic the same numbers
        k = len(self.components)
        base = SPLIT_SEEDS[split] + seed
        per = [c.problems(math.ceil(n / k), base + i * FAMILY_SEED_STRIDE) for i, c in enumerate(self.components)]
        return interleave(per, n)

    def default_model(self) -> str | None:
        return REASONER_NAME


def examples(split: str, n: int, seed: int = 0) -> list[tuple[Problem, str]]:
    """``(problem, written solution)`` pairs of a pool; a problem whose steps cannot be written is skipped."""
    out: list[tuple[Problem, str]] = []
    for p in ReasonerTask().split_problems(split, n, seed):
        try:
            out.append((p, solution(p)))
        except ValueError:
            continue
    return out


register_task("reasoner", ReasonerTask)
