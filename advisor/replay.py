"""Offline replay: estimate accuracy and tokens of any (N, stages, scorer, vote) from calibration paths.

Estimator. For each problem we draw R random subsets of N of its recorded paths (without replacement;
the same draws for every config, i.e. common random numbers, so configs compare with little noise),
replay the pruning on each subset and average. All problems x draws run as one numpy batch.

Rules (those of the runtime's program, sglang_stop/program.py):
  * At a stage (prefix_len L, keep K) the paths still running (real length > L) are scored at L and
    ranked; the top min(K, #running) keep running, the rest stop at L tokens. Ties: draw order.
  * A path whose real length is <= L had already finished: it is not scored, costs its real length,
    is never pruned, votes, and does not count against K.
  * Tokens of a draw = sum over its N paths of min(real length, L of the stage that pruned it),
    i.e. N*L1 + kept*(L2-L1) + ... + the kept paths' real remaining lengths.
  * Vote over the surviving and early-finished paths with an extracted answer. ``majority``: one
    vote each. ``weighted``: a path's weight is the raw score of the last stage it was scored at; a
    voter never scored (finished before the first stage) weighs the mean of all last scores of the
    draw; with no scored path at all the vote is majority. The answer with the largest sum wins.
    Ties between answers count the expected value of a uniform tie-break (1/#tied). A draw with no
    answer at all is wrong.

Intervals: 95% bootstrap over problems, each resampled problem contributing one random draw, so the
interval is that of one real run over a problem set of the same size (problem and path sampling).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sglang_stop.advisor.calibration import CalibrationSet
from sglang_stop import policy
from sglang_stop.errors import UserError

Aggregation = Literal["majority", "weighted"]


class Stage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    prefix_len: int = Field(..., ge=1)
    keep: int = Field(..., ge=1)


class ReplayConfig(BaseModel):
    """A pruning policy in replayable form (keep counts, not ratios)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    n: int = Field(..., ge=1)
    stages: tuple[Stage, ...] = ()
    scorer: str = "none"
    aggregation: Aggregation = "majority"

    def canonical(self) -> ReplayConfig:
        """Drop no-op stages (keep >= alive) under majority vote; without stages the scorer is moot.
        (Under weighted vote a no-op stage still scores, and its scores weigh the votes.)"""
        alive, out, last = self.n, [], 0
        for st in self.stages:
            if st.prefix_len <= last:
                continue
            if st.keep < alive or self.aggregation == "weighted":
                out.append(Stage(prefix_len=st.prefix_len, keep=min(st.keep, alive)))
                alive = min(st.keep, alive)
                last = st.prefix_len
        if not out or self.scorer == "none":
            return ReplayConfig(n=self.n, stages=(), scorer="none", aggregation="majority")
        return ReplayConfig(n=self.n, stages=tuple(out), scorer=self.scorer, aggregation=self.aggregation)

    def label(self) -> str:
        st = " ".join(f"{s.prefix_len}:{s.keep}" for s in self.stages) or "-"
        return f"N={self.n} stages={st} scorer={self.scorer} vote={self.aggregation}"


def policy_notes(cfg: ReplayConfig, opt: str = "--stage") -> list[str]:
    """Check a user-given policy before replaying it: a keep above the paths alive or a prune point
    that does not advance is a UserError naming the stage (the runtime refuses both); parts the
    replay would drop as no-ops (a stage keeping every path under majority vote, a scorer or a
    weighted vote without a pruning stage) come back as warnings naming what is dropped."""

    def name(st: Stage) -> str:
        return f"{opt} {st.prefix_len}:{st.keep}"

    notes: list[str] = []
    alive, last, prev = cfg.n, 0, None
    for st in cfg.stages:
        if st.prefix_len <= last:
            raise UserError(f"{name(st)}: prefix length must exceed the previous stage's ({name(prev)}); "  # type: ignore[arg-type]
                            "stages are cumulative prefix lengths, in order")
        if st.keep > alive:
            after = f"after {name(prev)}" if prev is not None else f"with --n {cfg.n}"
            raise UserError(f"{name(st)}: keeps {st.keep} paths, but only {alive} are alive {after}")
        if st.keep == alive and cfg.aggregation == "majority":
            notes.append(f"{name(st)} keeps all {alive} paths alive: it prunes nothing and is dropped")
        alive, last, prev = st.keep, st.prefix_len, st
    canon = cfg.canonical()
    if cfg.scorer == "none" and cfg.stages:
        raise UserError(f"{opt}: scorer 'none' ranks nothing, so the stages cannot prune; give --scorer")
    if cfg.scorer != "none" and not canon.stages:
        notes.append(f"--scorer {cfg.scorer}: no stage prunes, so the scorer is unused (replaying unpruned N={cfg.n})")
    if cfg.aggregation == "weighted" and not canon.stages:
        notes.append("--aggregation weighted: no stage scores the paths, so the vote is majority")
    return notes


class ReplayResult(BaseModel):
    config: ReplayConfig
    accuracy: float = Field(..., description="expected accuracy (fraction)")
    ci_low: float
    ci_high: float
    tokens: float = Field(..., description="expected generated tokens per problem, all paths")
    tokens_ci_low: float
    tokens_ci_high: float


class Replayer:
    """Replays configs on one calibration set; results are cached by canonical config."""

    def __init__(
        self,
        calib: CalibrationSet,
        *,
        draws: int = 128,
        bootstrap: int = 1000,
        seed: int = 0,
        level: float = 0.95,
        first_paths: bool = False,
    ) -> None:
        """``first_paths``: one draw, the first N recorded paths in order. A runtime run with the
        calibration's seed samples exactly those paths (per-path seeds), so this predicts that run
        exactly (ties broken by path index, as the runtime does): a check of the replay itself."""
        self.calib = calib
        P, M = calib.lengths.shape
        draws = 1 if first_paths else draws
        self.P, self.M, self.R = P, M, draws
        rng = np.random.default_rng(seed)
        if first_paths:
            self._perm = np.broadcast_to(np.arange(M), (P, 1, M))
        else:
            self._perm = np.argsort(rng.random((P, draws, M)), axis=-1)  # (P, R, M) path order per draw
        self._random_scores: np.ndarray | None = None  # made on first use of the `random` scorer
        self._seed = seed
        self._boot_p = rng.integers(0, P, size=(bootstrap, P))
        self._boot_r = rng.integers(0, draws, size=(bootstrap, P))
        self._q = ((1 - level) / 2 * 100, (1 + level) / 2 * 100)
        self._pidx = np.arange(P)[:, None, None]
        self._ridx = np.arange(draws)[None, :, None]
        self._cache: dict[ReplayConfig, ReplayResult] = {}
        self.evaluations = 0

    def check(self, cfg: ReplayConfig) -> None:
        if cfg.n > self.M:
            raise UserError(f"n={cfg.n} exceeds the {self.M} paths recorded per problem")
        if cfg.scorer not in self.calib.all_scorers:
            raise UserError(f"scorer '{cfg.scorer}' not recorded; have {', '.join(self.calib.all_scorers)}")
        if cfg.aggregation == "weighted" and cfg.stages and cfg.scorer not in self.calib.weight_scorers:
            raise UserError(
                f"aggregation weighted: scorer '{cfg.scorer}' recorded negative scores, and the runtime's vote "
                f"rejects negative weights; use majority (weighted works with: {', '.join(self.calib.weight_scorers)})"
            )
        for i, st in enumerate(cfg.stages):
            if st.prefix_len not in self.calib.prefix_lens:
                raise UserError(
                    f"stages.{i}.prefix_len: {st.prefix_len} not recorded; have {self.calib.prefix_lens}"
                )

    def per_draw(self, cfg: ReplayConfig) -> tuple[np.ndarray, np.ndarray]:
        """(accuracy, tokens), each (P, R): one value per problem and draw."""
        cfg = cfg.canonical()
        self.check(cfg)
        c = self.calib
        idx = self._perm[:, :, : cfg.n]  # (P, R, N)
        P, R, N = idx.shape
        lengths = c.lengths[self._pidx, idx]
        answers = c.answers[self._pidx, idx]
        alive = np.ones((P, R, N), dtype=bool)
        cap = np.full((P, R, N), np.iinfo(np.int64).max, dtype=np.int64)
        last_scores = np.full((P, R, N), np.nan)
        for st in cfg.stages:
            li = c.prefix_lens.index(st.prefix_len)
            if cfg.scorer == "random":
                if self._random_scores is None:
                    shape = (self.P, self.R, self.M, len(c.prefix_lens))
                    self._random_scores = np.random.default_rng([self._seed, 1]).random(shape)
                s = self._random_scores[self._pidx, self._ridx, idx, li]
            else:
                s = c.scores[cfg.scorer][self._pidx, idx, li]
            running = alive & (lengths > st.prefix_len)
            if st.keep < N:
                order = np.argsort(np.where(running, -s, np.inf), axis=-1, kind="stable")[..., : st.keep]
                top = np.zeros_like(running)
                np.put_along_axis(top, order, True, axis=-1)
                pruned = running & ~top
                cap[pruned] = st.prefix_len
                alive &= ~pruned
            last_scores = np.where(running, s, last_scores)
        tokens = np.minimum(lengths, cap).sum(-1).astype(float)
        weights = None
        if cfg.aggregation == "weighted" and cfg.stages:
            scored = ~np.isnan(last_scores)
            n_scored = scored.sum(-1, keepdims=True)
            mean = np.where(scored, last_scores, 0.0).sum(-1, keepdims=True) / np.maximum(n_scored, 1)
            weights = np.where(n_scored > 0, np.where(scored, last_scores, mean), 1.0)
        acc = self._vote(alive & (answers >= 0), answers, weights)
        self.evaluations += 1
        return acc, tokens

    def _vote(self, voters: np.ndarray, answers: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
        P, R, N = voters.shape
        A = self.calib.answer_correct.shape[1]
        flat = ((self._pidx * R + self._ridx) * A + np.where(voters, answers, 0)).ravel()

        def per_answer(w: np.ndarray) -> np.ndarray:
            return np.bincount(flat, weights=w.ravel(), minlength=P * R * A).reshape(P, R, A)

        present = per_answer(voters.astype(float)) > 0
        votes = per_answer(np.where(voters, 1.0 if weights is None else weights, 0.0))
        votes = np.where(present, votes, -np.inf)  # weights may be negative: absent answers never win
        best = votes.max(-1, keepdims=True)
        winners = present & np.isclose(votes, best, rtol=0, atol=1e-12)
        right = (winners & self.calib.answer_correct[:, None, :]).sum(-1)
        return right / np.maximum(winners.sum(-1), 1)

    def evaluate(self, cfg: ReplayConfig) -> ReplayResult:
        key = cfg.canonical()
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        acc, tok = self.per_draw(key)
        boot_acc = acc[self._boot_p, self._boot_r].mean(-1)
        boot_tok = tok[self._boot_p, self._boot_r].mean(-1)
        a_lo, a_hi = np.percentile(boot_acc, self._q)
        t_lo, t_hi = np.percentile(boot_tok, self._q)
        res = ReplayResult(
            config=key,
            accuracy=float(acc.mean()),
            ci_low=float(a_lo),
            ci_high=float(a_hi),
            tokens=float(tok.mean()),
            tokens_ci_low=float(t_lo),
            tokens_ci_high=float(t_hi),
        )
        self._cache[key] = res
        return res

    def evaluate_many(self, cfgs: Iterable[ReplayConfig]) -> list[ReplayResult]:
        return [self.evaluate(c) for c in cfgs]


def keep_count(alive: int, ratio: float) -> int:
    """Paths a ``ratio`` stage keeps of ``alive``: the runtime's own rule (sglang_stop.policy)."""
    return policy.keep_count(alive, keep_ratio=ratio)
