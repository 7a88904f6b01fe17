"""The parallel-reasoning program as an SGLang ``@sgl.function``: fork N paths, generate each prefix,
call the scoring hook once on all prefixes, keep the best, continue the kept paths, join and vote.

It knows nothing of torch or HTTP: it talks to the backend only through SGLang's frontend
(``fork``, ``gen``) and the small ``PathBackend`` protocol (seed, view, release a branch), so the
same program runs in-process and against a server.

Rules shared with the advisor's offline replay (advisor/replay.py):
- A path that ends (EOS) before a prune point is complete: it is not scored, costs nothing more,
  and votes. Each stage keeps ``stage.kept(#unfinished)`` of the paths still running.
- Tokens = every sampled token of every path (prefixes of pruned paths included).
- ``cfg.online`` (DeepConf's online mode) replaces the prune stages: warmup paths run to the end and set a
  confidence bar; the others stop when their window confidence falls below it (policy.online_*).
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable
from typing import Any

import sglang as sgl
from pydantic import BaseModel, Field

from sglang_stop.aggregate import majority_vote
from sglang_stop.backends.base import Branch
from sglang_stop.config import OnlineConfig, RuntimeConfig
from sglang_stop.policy import (
    kept_positions, lowest_window_mean, online_stop_at, online_threshold, online_votes, vote_weights,
)
from sglang_stop.scorers.base import ScoreContext, Scorer
from sglang_stop.scorers.heuristics import token_confidences

# SGLang's executor thread warns with a full traceback for every failed branch; the program re-raises
# that error to its caller (which reports it once), so the per-branch copies are noise.
warnings.filterwarnings("ignore", message="Error in stream_executor", category=UserWarning)


class PathRecord(BaseModel):
    index: int
    text: str
    answer: str | None
    tokens: int  # sampled tokens of this path
    finished: bool  # ended with EOS (vs cut by length or pruned)
    pruned_at: int | None = None  # stage index where it was pruned
    stopped_by_consensus: bool = False
    below_conf_bar: bool = False  # online mode: stopped below the bar, or a warmup path that ended below it
    scores: list[float] = Field(default_factory=list)  # one per stage it was scored at

    @property
    def votes(self) -> bool:
        """Whether this path's answer enters the vote."""
        return self.pruned_at is None and not self.stopped_by_consensus and not self.below_conf_bar


class ProgramResult(BaseModel):
    answer: str | None
    tokens: int
    paths: list[PathRecord]
    votes: dict[str, float]
    conf_bar: float | None = None  # online mode: the warmup paths' bar


def _online(
    states: list[Any], view: Callable[[Any], Branch], close: Callable[..., None], cfg: RuntimeConfig, on: OnlineConfig
) -> tuple[list[Any], dict[int, float], float]:
    """DeepConf's online mode. Returns the paths that ran to the end (warmup included), their lowest group
    confidences (a voter's weight; computed once, when a path has ended), and the bar. Stopped paths are
    closed here."""
    max_new = cfg.sampling.max_new_tokens

    def lowest_of(sts: list[Any]) -> dict[int, float]:
        views = [view(st) for st in sts]
        return {v.index: lowest_window_mean(token_confidences(v, on.top_k), on.window) for v in views}

    warm, running = states[: on.warmup], states[on.warmup :]
    _run_segment(warm, "warmup", cfg, max_new)
    lowest = lowest_of(warm)
    bar = online_threshold(list(lowest.values()), on.percentile)
    done, generated, checked = list(warm), 0, {id(st): 0 for st in running}
    while running and generated < max_new:
        step = min(on.check_every, max_new - generated)
        _run_segment(running, f"online{generated}", cfg, step)
        generated += step
        still = []
        for st in running:  # only the tokens since the last check are tested (the rule is incremental)
            v = view(st)
            confs = token_confidences(v, on.top_k)
            if online_stop_at(confs, on.window, bar, start=checked[id(st)]) is not None:
                close(st, below_conf_bar=True)
            elif v.finished:
                done.append(st)
            else:
                still.append(st)
            checked[id(st)] = len(confs)
        running = still
    ended = done[len(warm) :] + running
    return done + running, {**lowest, **lowest_of(ended)}, bar


def branch_seed(seed: int, problem_key: str, index: int) -> int:
    """A stable per-path seed: path i of a problem samples the same prefix in pruned and unpruned runs."""
    import hashlib

    h = hashlib.blake2b(f"{seed}|{problem_key}|{index}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


def _gen(name: str, cfg: RuntimeConfig, max_tokens: int) -> Any:
    sp = cfg.sampling
    return sgl.gen(
        name,
        max_tokens=max_tokens,
        temperature=sp.temperature,
        top_p=sp.top_p,
        top_k=sp.top_k,
        stop=list(sp.stop) or None,
    )


def _run_segment(states: list[Any], name: str, cfg: RuntimeConfig, max_tokens: int) -> None:
    for st in states:
        st += _gen(name, cfg, max_tokens)
    for st in states:
        st.stream_executor.sync()
        if st.stream_executor.error_ is not None:
            raise st.stream_executor.error_


@sgl.function
def parallel_reasoning(
    s: Any,
    prompt: str,
    cfg: RuntimeConfig,
    scorer: Scorer,
    extract_answer: Callable[[str], str | None],
    problem_key: str = "",
    question: str | None = None,
) -> ProgramResult:
    backend = s.stream_executor.backend
    s += prompt
    # fork() only commits the shared prompt (one encode for all children) if it sees the text;
    # the frontend checks before its worker has applied `s += prompt`, so sync first.
    s.stream_executor.sync()
    group = s.fork(cfg.n)
    states = list(group.states)
    for i, st in enumerate(states):
        backend.bind_branch(st.stream_executor, index=i, seed=branch_seed(cfg.seed, problem_key, i))
    index_of = {id(st): i for i, st in enumerate(states)}
    records: dict[int, PathRecord] = {}
    rng = random.Random(branch_seed(cfg.seed, problem_key, -1))

    def view(st: Any) -> Branch:
        return backend.branch_view(st.stream_executor, index_of[id(st)])

    def close(st: Any, **kw: Any) -> None:
        v = view(st)
        rec = records.setdefault(v.index, PathRecord(index=v.index, text="", answer=None, tokens=0, finished=False))
        rec.text = v.text
        rec.tokens = v.sampled
        rec.finished = v.finished
        rec.answer = extract_answer(v.text)
        for k, val in kw.items():
            setattr(rec, k, val)
        open_states.pop(id(st), None)
        st.stream_executor.end()  # frees the branch's KV (backend.end_program -> release)

    open_states = {id(st): st for st in states}  # forked branches not yet ended
    try:
        running = states
        done: list[Any] = []
        generated = 0
        max_new = cfg.sampling.max_new_tokens
        last_scores: dict[int, float] = {}
        conf_bar: float | None = None
        if cfg.online is not None:
            finished, lowest, conf_bar = _online(running, view, close, cfg, cfg.online)
            for st in finished:
                i = view(st).index
                if online_votes(lowest[i], conf_bar):
                    last_scores[i] = lowest[i]
                    close(st)
                else:
                    close(st, below_conf_bar=True)
            running = []
        for si, stage in enumerate(cfg.stages if scorer.prunes else []):
            _run_segment(running, f"seg{si}", cfg, stage.prefix_len - generated)
            generated = stage.prefix_len
            views = [view(st) for st in running]
            still = [(st, v) for st, v in zip(running, views) if not v.finished]
            done += [st for st, v in zip(running, views) if v.finished]
            if not still:
                running = []
                break
            ctx = ScoreContext(
                backend=backend, rng=rng, stage=si, prefix_len=stage.prefix_len, question=question, problem_key=problem_key
            )
            scores = scorer.score([v for _, v in still], ctx)
            if len(scores) != len(still):
                raise RuntimeError(f"scorer {scorer.name!r} returned {len(scores)} scores for {len(still)} paths")
            for (_, v), sc in zip(still, scores):
                records.setdefault(v.index, PathRecord(index=v.index, text="", answer=None, tokens=0, finished=False))
                records[v.index].scores.append(float(sc))
                last_scores[v.index] = float(sc)
            k = stage.kept(len(still))
            keep = kept_positions(scores, [v.index for _, v in still], k)
            running = []
            for j, (st, _) in enumerate(still):
                if j in keep:
                    running.append(st)
                else:
                    close(st, pruned_at=si)

        remaining = max_new - generated
        if running and remaining > 0:
            if cfg.consensus is None:
                _run_segment(running, "rest", cfg, remaining)
            else:
                chunk = 0
                while running and remaining > 0:
                    step = min(cfg.consensus.chunk_tokens, remaining)
                    _run_segment(running, f"rest{chunk}", cfg, step)
                    remaining -= step
                    chunk += 1
                    views = [view(st) for st in running]
                    done += [st for st, v in zip(running, views) if v.finished]
                    running = [st for st, v in zip(running, views) if not v.finished]
                    answers = [extract_answer(view(st).text) for st in done]
                    counts: dict[str, int] = {}
                    for a in answers:
                        if a is not None:
                            counts[a] = counts.get(a, 0) + 1
                    if counts and max(counts.values()) >= cfg.consensus.votes:
                        for st in running:
                            close(st, stopped_by_consensus=True)
                        running = []
        for st in running + done:
            close(st)

    finally:
        # An error anywhere (a scorer, the backend, a cancelled run) must still end every branch:
        # each forked executor owns a non-daemon worker thread that would keep the process alive.
        for st in open_states.values():
            st.stream_executor.end()
    paths = [records[i] for i in sorted(records)]
    voters = [p for p in paths if p.votes]
    answers = [p.answer for p in voters]
    weights = vote_weights(last_scores, [p.index for p in voters]) if cfg.aggregation.method == "weighted" else None
    answer = majority_vote(answers, weights)
    votes: dict[str, float] = {}
    for a, w in zip(answers, weights or [1.0] * len(answers)):
        if a is not None:
            votes[a] = votes.get(a, 0.0) + w
    return ProgramResult(answer=answer, tokens=sum(p.tokens for p in paths), paths=paths, votes=votes, conf_bar=conf_bar)
