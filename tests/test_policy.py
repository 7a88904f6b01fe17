"""The pruning and voting rules exist once (sglang_stop.policy) and every caller agrees with them."""

from __future__ import annotations

import pytest

from sglang_stop.advisor.replay import keep_count as replay_keep_count
from sglang_stop.config import PruneStage
from sglang_stop.policy import keep_count, rank_paths, vote_weights

RATIOS = [round(0.01 * i, 2) for i in range(1, 101)]


def test_keep_rule_agrees_everywhere_alive_1_to_1024_ratio_steps_of_001():
    """The runtime's stage (also what the advisor's exact check calls) and the replay's keep count,
    for every alive in 1..1024 and ratio in 0.01..1.00: the 141 disagreements of old are gone."""
    for r in RATIOS:
        stage = PruneStage(prefix_len=1, keep_ratio=r)
        for alive in range(1, 1025):
            k = stage.kept(alive)
            assert k == replay_keep_count(alive, r), (alive, r)
            assert 1 <= k <= alive


@pytest.mark.parametrize("alive, ratio, want", [(920, 0.55, 506), (10, 0.3, 3), (7, 0.5, 4), (1, 0.01, 1),
                                                (100, 0.07, 7), (3, 1.0, 3)])
def test_keep_ratio_reads_the_product_up_to_float_noise(alive, ratio, want):
    assert keep_count(alive, keep_ratio=ratio) == want


def test_fixed_keep_is_capped_by_alive():
    assert keep_count(3, keep=5) == 3 and PruneStage(prefix_len=4, keep=2).kept(9) == 2


def test_rank_ties_within_float_noise_go_to_the_lower_index():
    scores = [0.5, 0.5 + 1e-8, 0.9, 0.5 - 1e-8]
    assert rank_paths(scores, [0, 1, 2, 3]) == [2, 0, 1, 3]
    assert rank_paths([0.5, 0.6], [7, 3]) == [1, 0]


def test_weighted_vote_weights():
    last = {0: 0.9, 1: 0.2, 3: 0.1, 4: 0.4}
    mean = (0.9 + 0.2 + 0.1 + 0.4) / 4  # a voter never scored weighs the mean last score
    assert vote_weights(last, [0, 1, 2, 4]) == pytest.approx([0.9, 0.2, mean, 0.4])
    assert vote_weights({}, [0, 1]) is None
