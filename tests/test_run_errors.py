"""An error anywhere in a run ends it promptly: the error reaches the caller once, other problems are
cancelled, every forked branch is ended, and no worker thread is left alive (the old hang)."""

from __future__ import annotations

import threading
import time

import pytest

from sglang_stop.backends.local import LocalBackend
from sglang_stop.config import RuntimeConfig
from sglang_stop.errors import RunInterrupted, UserError
from sglang_stop.models import load_model
from sglang_stop.runner import run_problems
from sglang_stop.scorers.base import Scorer
from sglang_stop.tasks import load_task
from tests.battery import TESTBED


class Exploding(Scorer):
    name = "exploding"

    def score(self, branches, ctx):
        if ctx.problem_key.endswith(("1", "5", "9")):
            raise UserError("scorer.options: exploded on purpose")
        return [0.0] * len(branches)


@pytest.fixture(scope="module")
def backend():
    be = LocalBackend(*load_model(str(TESTBED)), model_name="testbed")
    yield be
    be.shutdown()


def live_branch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.is_alive() and not t.daemon and t is not threading.main_thread()]


def wait_threads_gone(timeout: float = 5.0) -> list[threading.Thread]:
    deadline = time.monotonic() + timeout
    while live_branch_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    return live_branch_threads()


CFG = RuntimeConfig(n=4, stages=[{"prefix_len": 8, "keep": 2}], scorer={"name": "confidence"},
                    sampling={"max_new_tokens": 48})


def test_error_in_one_problem_ends_the_run_and_every_branch(backend):
    task = load_task("testbed")
    probs = task.problems(12, seed=0)
    assert any(p.id.endswith(("1", "5", "9")) for p in probs)
    t0 = time.monotonic()
    with pytest.raises(UserError, match=r"^problem tb-\w+: scorer.options: exploded on purpose$"):
        run_problems(backend, task, probs, CFG, concurrency=4, scorer=Exploding())
    assert time.monotonic() - t0 < 30
    assert wait_threads_gone() == []
    assert backend.live_branches() == 0
    # the backend serves again afterwards
    res, summary = run_problems(backend, task, probs[:2], CFG, concurrency=2)
    assert summary.problems == 2


def test_cancel_event_stops_the_run_and_keeps_finished_results(backend):
    task = load_task("testbed")
    probs = task.problems(40, seed=1)
    cancel = threading.Event()
    kept = []

    def on_result(r):
        kept.append(r)
        if len(kept) == 3:
            cancel.set()

    with pytest.raises(RunInterrupted) as e:
        run_problems(backend, task, probs, CFG, concurrency=2, on_result=on_result, cancel=cancel)
    assert 3 <= e.value.done < 40 and e.value.done == len(kept)
    assert len({r.problem_id for r in kept}) == len(kept)
    assert wait_threads_gone() == []


def test_prompt_longer_than_the_context_window_fails_before_decoding(backend):
    task = load_task("testbed")
    cfg = CFG.model_copy(update={"sampling": CFG.sampling.model_copy(update={"max_new_tokens": 192})})
    before = backend.usage().generated_tokens
    with pytest.raises(UserError, match=r"exceeds the model's context window \(128 tokens\)"):
        run_problems(backend, task, task.problems(2, seed=0), cfg)
    assert backend.usage().generated_tokens == before


def test_weighted_vote_refused_for_signed_scores_but_allowed_in_online_mode(backend):
    """Votes weighted by a scorer that can score below 0 are refused; DeepConf's online mode weighs votes
    by each path's lowest window confidence (never below 0), so there the scorer does not matter."""
    task = load_task("testbed")
    probs = task.problems(1, seed=0)
    signed = RuntimeConfig(n=4, stages=[{"prefix_len": 8, "keep": 2}], scorer={"name": "logprob"},
                           aggregation={"method": "weighted"}, sampling={"max_new_tokens": 24})
    with pytest.raises(UserError, match="aggregation.method: 'weighted' needs a scorer with non-negative scores"):
        run_problems(backend, task, probs, signed)
    online = RuntimeConfig(n=4, online={"warmup": 2, "percentile": 10, "window": 4}, scorer={"name": "none"},
                           aggregation={"method": "weighted"}, sampling={"max_new_tokens": 64})
    res, _ = run_problems(backend, task, probs, online)
    voters = [p for p in res[0].paths if p.votes and p.answer is not None]
    assert voters, [(p.votes, p.answer, p.tokens) for p in res[0].paths]
    assert sum(res[0].votes.values()) != len(voters)  # confidences, not one vote each
