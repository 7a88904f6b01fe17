from __future__ import annotations

import random

import pytest

from sglang_stop.aggregate import majority_vote, vote_counts


def test_plain_majority() -> None:
    assert majority_vote(["3", "4", "3", None, "5"]) == "3"


def test_all_abstain() -> None:
    assert majority_vote([]) is None
    assert majority_vote([None, None]) is None
    assert vote_counts([None]) == {}


def test_abstentions_do_not_count() -> None:
    # None is the most common "answer" but abstains
    assert majority_vote([None, None, None, "7", "8", "8"]) == "8"


def test_tie_goes_to_first_to_reach_the_count() -> None:
    # "a" and "b" both get 2 votes; "b" reaches 2 at index 2, "a" only at index 3
    assert majority_vote(["a", "b", "b", "a"]) == "b"
    assert majority_vote(["b", "a", "a", "b"]) == "a"
    # single votes each: the first path wins
    assert majority_vote([None, "x", "y", "z"]) == "x"


def test_tie_break_is_order_not_hash_dependent() -> None:
    rng = random.Random(0)
    for _ in range(200):
        answers = [rng.choice(["1", "2", "3", None]) for _ in range(rng.randint(1, 12))]
        counts = vote_counts(answers)
        got = majority_vote(answers)
        if not counts:
            assert got is None
            continue
        top = max(counts.values())
        assert counts[got] == top
        # reference: walk the paths, first answer whose running count hits top
        seen: dict[str, int] = {}
        for a in answers:
            if a is None:
                continue
            seen[a] = seen.get(a, 0) + 1
            if seen[a] == top:
                assert got == a
                break


def test_weighted_vote_sums_weights() -> None:
    answers = ["1", "2", "2", "1", "3"]
    assert majority_vote(answers) == "2"  # 2 vs 2 vs 1: "2" reaches 2 first
    assert majority_vote(answers, [0.9, 0.2, 0.3, 0.9, 0.1]) == "1"  # 1.8 vs 0.5
    assert vote_counts(answers, [0.9, 0.2, 0.3, 0.9, 0.1]) == pytest.approx({"1": 1.8, "2": 0.5, "3": 0.1})
    assert list(vote_counts(answers)) == ["1", "2", "3"]  # first-appearance order


def test_weighted_float_tie_is_a_tie() -> None:
    # 0.1 + 0.2 != 0.3 in floats; still a tie, broken by order: "b" reaches its total at index 1
    assert majority_vote(["a", "b", "a"], [0.1, 0.3, 0.2]) == "b"
    assert majority_vote(["x", "y"], [0.0, 0.0]) == "x"  # all-zero weights: first path


def test_weight_errors() -> None:
    with pytest.raises(ValueError, match="weights"):
        majority_vote(["a", "b"], [1.0])
    with pytest.raises(ValueError, match=r"weights\[1\]"):
        majority_vote(["a", "b"], [1.0, -0.5])
    with pytest.raises(ValueError, match=r"weights\[0\]"):
        majority_vote(["a"], [float("nan")])
