"""The non-learned scorers rank branches by what the backend recorded while sampling."""

from __future__ import annotations

import random

import pytest

from sglang_stop.errors import UserError
from sglang_stop.scorers import Branch, ScoreContext, make_scorer

CTX = ScoreContext(backend=None, rng=random.Random(0))


def branch(i: int, logprobs: list[float], top: list[list[float]] | None = None, ent: list[float] | None = None):
    n = len(logprobs)
    return Branch(i, [1], list(range(n)), "", logprobs, top or [[-0.1, -3.0]] * n, ent or [0.5] * n)


def test_logprob_lowest_window_finds_the_one_slip():
    steady = branch(0, [-0.6] * 8)  # never sure, never surprised
    slip = branch(1, [-0.01] * 7 + [-4.0])  # sure everywhere but one token
    mean = make_scorer("logprob").score([steady, slip], CTX)
    lowest = make_scorer("logprob", {"window": 1, "reduce": "lowest"}).score([steady, slip], CTX)
    assert mean[1] > mean[0]  # the mean hides the slip ...
    assert lowest == [pytest.approx(-0.6), pytest.approx(-4.0)]  # ... the lowest window does not
    tail = make_scorer("logprob", {"window": 2, "reduce": "tail"}).score([slip], CTX)
    assert tail == [pytest.approx((-0.01 - 4.0) / 2)]


def test_confidence_and_entropy_prefer_peaked_distributions():
    peaked = branch(0, [-0.1] * 4, top=[[-0.01, -6.0]] * 4, ent=[0.05] * 4)
    flat = branch(1, [-0.7] * 4, top=[[-0.7, -0.7]] * 4, ent=[0.69] * 4)
    conf = make_scorer("confidence", {"top_k": 2}).score([peaked, flat], CTX)
    ent = make_scorer("entropy").score([peaked, flat], CTX)
    assert conf[0] > conf[1] and ent[0] > ent[1]


def test_bad_window_option_names_the_field():
    with pytest.raises(UserError, match="window"):
        make_scorer("logprob", {"window": 0})
