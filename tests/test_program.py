"""Program options on a tiny model: progressive stages, consensus early stop, weighted vote, finished paths."""

from __future__ import annotations

import pytest

from sglang_stop.backends.local import LocalBackend
from sglang_stop.config import RuntimeConfig
from sglang_stop.program import parallel_reasoning
from sglang_stop.scorers import Scorer, make_scorer


def first_char(text: str) -> str | None:
    return text[:1] or None


@pytest.fixture()
def backend(tiny_lm):
    be = LocalBackend(*tiny_lm)
    yield be
    be.shutdown()


def run(backend, cfg, scorer, key="k"):
    return parallel_reasoning.run(
        prompt="Q2+2=", cfg=cfg, scorer=scorer, extract_answer=first_char, problem_key=key, backend=backend
    ).ret_value


class ByIndex(Scorer):
    """Prefers high fork indices: makes the kept set predictable."""

    def score(self, branches, ctx):
        return [float(b.index) for b in branches]


def test_progressive_stages_keep_the_top_scored_paths(backend):
    cfg = RuntimeConfig(
        n=8,
        stages=[{"prefix_len": 3, "keep": 4}, {"prefix_len": 6, "keep_ratio": 0.5}],
        sampling={"max_new_tokens": 12, "temperature": 1.0},
    )
    res = run(backend, cfg, ByIndex())
    running_at_0 = [p for p in res.paths if p.scores]
    # finished-before-stage paths are not scored; among the rest the highest indices survive
    survivors = sorted(p.index for p in res.paths if p.pruned_at is None and len(p.scores) == 2)
    pruned0 = [p.index for p in res.paths if p.pruned_at == 0]
    assert all(i < min(survivors + [99]) for i in pruned0)
    assert sum(1 for p in running_at_0 if p.pruned_at == 0) == max(0, len(running_at_0) - 4)
    assert res.tokens == sum(p.tokens for p in res.paths)
    for p in res.paths:
        if p.pruned_at == 0:
            assert p.tokens <= 3
        elif p.pruned_at == 1:
            assert p.tokens <= 6


def test_none_scorer_never_prunes(backend):
    cfg = RuntimeConfig(n=4, stages=[{"prefix_len": 3, "keep": 1}], sampling={"max_new_tokens": 8, "temperature": 1.0})
    res = run(backend, cfg, make_scorer("none"))
    assert all(p.pruned_at is None for p in res.paths)


def test_consensus_stops_remaining_paths():
    from tests.conftest import make_char_tokenizer, make_tiny_llama

    tok = make_char_tokenizer()
    model = make_tiny_llama(len(tok), seed=3)
    orig = model.forward

    def eos_often(*a, **k):  # paths end after a few tokens, at different times
        out = orig(*a, **k)
        out.logits[..., tok.eos_token_id] += 4.0
        return out

    model.forward = eos_often
    be = LocalBackend(model, tok)
    cfg = RuntimeConfig(n=12, consensus={"votes": 2, "chunk_tokens": 1}, sampling={"max_new_tokens": 40, "temperature": 1.0})
    try:
        res = parallel_reasoning.run(
            prompt="Q", cfg=cfg, scorer=make_scorer("none"), extract_answer=lambda t: "same", problem_key="c", backend=be
        ).ret_value
    finally:
        be.shutdown()
    stopped = [p for p in res.paths if p.stopped_by_consensus]
    finished = [p for p in res.paths if p.finished]
    assert stopped, "consensus never triggered"
    assert res.votes == {"same": float(len(finished))} and len(finished) >= 2
    # stopped paths were cut as soon as the chunk with the 2nd finished path ended
    assert all(p.tokens <= max(f.tokens for f in finished) for p in stopped)


def test_weighted_vote_uses_last_stage_scores(backend):
    cfg = RuntimeConfig(
        n=4,
        stages=[{"prefix_len": 2, "keep": 4}],
        aggregation={"method": "weighted"},
        sampling={"max_new_tokens": 6, "temperature": 1.0},
    )
    res = run(backend, cfg, ByIndex(), key="w")
    voters = [p for p in res.paths if p.pruned_at is None and p.answer is not None]
    expect: dict[str, float] = {}
    for p in voters:
        w = p.scores[-1] if p.scores else sum(q.scores[-1] for q in res.paths if q.scores) / max(1, sum(1 for q in res.paths if q.scores))
        expect[p.answer] = expect.get(p.answer, 0.0) + w
    assert res.votes == pytest.approx(expect)
