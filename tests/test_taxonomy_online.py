"""DeepConf's online mode: the rule on its own (policy.online_*), the config field, and the program."""

from __future__ import annotations

import pytest

from sglang_stop.backends.local import LocalBackend
from sglang_stop.config import RuntimeConfig, json_schema
from sglang_stop.policy import lowest_window_mean, online_stop_at, online_threshold, online_votes, percentile
from sglang_stop.program import parallel_reasoning
from sglang_stop.scorers import make_scorer
from sglang_stop.scorers.heuristics import token_confidences


def test_percentile_interpolates_as_numpy():
    np = pytest.importorskip("numpy")
    xs = [3.0, 1.0, 4.0, 1.5, 9.0, 2.6]
    for q in (0, 10, 37.5, 50, 90, 100):
        assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))
    assert online_threshold([2.0, 4.0], 90) == pytest.approx(3.8)


def test_online_stop_at_the_first_full_window_below_the_bar():
    confs = [5.0] * 6 + [1.0, 1.0] + [5.0] * 4
    # window 4: means over [t-4, t): t=7 -> (5+5+5+1)/4 = 4.0; t=8 -> 3.0
    assert online_stop_at(confs, 4, 3.5) == 8
    assert online_stop_at(confs, 4, 4.5) == 7
    assert online_stop_at(confs, 4, 2.9) is None
    assert online_stop_at(confs, 4, 4.5, start=7) == 8  # positions up to `start` were checked before
    assert online_stop_at([0.0, 0.0], 4, 1.0) is None  # no full window yet: never stopped while running
    assert not online_votes(lowest_window_mean([0.0, 0.0], 4), 1.0)  # ... but it does not vote
    assert online_votes(3.0, 3.0) and not online_votes(2.99, 3.0)


def test_online_config_validated_and_in_the_schema():
    cfg = RuntimeConfig.model_validate({"n": 8, "online": {"warmup": 2, "percentile": 10}})
    assert cfg.online is not None and cfg.online.window == 16
    for bad, msg in (
        ({"n": 2, "online": {"warmup": 3}}, "online.warmup"),
        ({"n": 8, "online": {}, "stages": [{"prefix_len": 4, "keep": 2}]}, "drop the stages"),
        ({"n": 8, "online": {"percentile": 101}}, "percentile"),
        ({"n": 8, "online": {"windw": 4}}, "windw"),
    ):
        with pytest.raises(ValueError, match=msg):
            RuntimeConfig.model_validate(bad)
    assert "OnlineConfig" in json_schema()["$defs"]


@pytest.fixture()
def backend(tiny_lm):
    be = LocalBackend(*tiny_lm)
    yield be
    be.shutdown()


def test_program_online_mode_stops_paths_below_the_warmup_bar(backend):
    cfg = RuntimeConfig(n=8, online={"warmup": 3, "percentile": 100, "window": 3},
                        sampling={"max_new_tokens": 12, "temperature": 1.0})
    res = parallel_reasoning.run(prompt="Q2+2=", cfg=cfg, scorer=make_scorer("none"),
                                 extract_answer=lambda t: t[:1] or None, problem_key="k", backend=backend).ret_value
    assert res.conf_bar is not None
    warm = [p for p in res.paths if p.index < 3]
    assert all(p.tokens == 12 or p.finished for p in warm)  # warmup paths run to the end
    below = [p for p in res.paths if p.below_conf_bar]
    assert below and not all(p.below_conf_bar for p in res.paths)
    voters = [p for p in res.paths if p.votes]
    assert sum(res.votes.values()) == len([p for p in voters if p.answer is not None])
    assert res.tokens == sum(p.tokens for p in res.paths)
    stopped = [p for p in below if p.index >= 3 and not p.finished]
    assert any(p.tokens < 12 for p in stopped)  # stopped early: fewer tokens than the limit
    # percentile 100: the bar is the best warmup path's lowest group confidence; only it votes of the warmup
    assert sum(p.votes for p in warm) == 1
