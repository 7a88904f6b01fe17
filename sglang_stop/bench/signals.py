"""Every pruning signal on the same sampled paths: ``sglang-stop bench signals --labels FILE``.

Input: label records (``sglang-stop label``): per problem, P prefixes of ``prefix_len`` tokens and K
continuations of each, with the continuations' tokens. Each problem's paths are teacher-forced once
(the prompt's KV shared by all of them), which gives what the runtime has at the prune point: the
per-token logprobs, top-20 logprobs and entropies the heuristics read, and each prefix's KV, which
STOP reads exactly as it does in a live run (``StopNet.logits_from_prefix_kvs``).

Figures per scorer: within-problem AUC (good := s_mc >= 0.5; pooled AUC mostly measures difficulty) and,
for each ``keep``, the pruning replayed: keep the top ``keep`` prefixes of a problem, vote over their
continuations (continuation j of each kept prefix, averaged over j), tokens = every prefix + the kept
paths' rest. With K=1 that is a live pruned run on these very paths: a kept path continues as it was
sampled. DeepConf's online mode is replayed on the whole paths the same way (its stop and vote rules
from ``policy``). 95% bootstrap intervals over problems; P(STOP better) is paired per problem.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from pydantic import BaseModel

from sglang_stop.aggregate import majority_vote
from sglang_stop.backends.base import Branch, PrefixKV
from sglang_stop.bench.compare import bootstrap_ci, paired_win_rate
from sglang_stop.config import OnlineConfig
from sglang_stop.kvcache import expand_rows
from sglang_stop.policy import kept_positions, lowest_window_mean, online_stop_at, online_threshold, online_votes
from sglang_stop.scorers import ScoreContext, make_scorer
from sglang_stop.scorers.heuristics import token_confidences
from sglang_stop.tasks import answers_match
from sglang_stop.training.labels import LabelRecord
from sglang_stop.training.metrics import auc, within_problem_auc

TOP_K = 20  # top logprobs kept per token, as the backends record (DeepConf reads vLLM's 20)


class KeepResult(BaseModel):
    accuracy: float
    ci_low: float
    ci_high: float
    tokens: float  # per problem
    p_stop_better: float | None = None


class SignalRow(BaseModel):
    name: str
    type: str  # the paper's taxonomy: I..IV, "-" for baselines
    within_auc: float | None
    mixed_problems: int
    pooled_auc: float | None
    keep: dict[int, KeepResult]


class OnlineRow(BaseModel):
    name: str
    options: dict[str, Any]
    result: KeepResult


class SignalsBench(BaseModel):
    labels: str
    model: str
    records: int
    problems: int
    prefixes: int  # P (most problems)
    continuations: int  # K
    prefix_len: int
    path_accuracy: float  # mean s_mc
    all_vote: KeepResult  # no pruning: every path votes
    rows: list[SignalRow]
    online: list[OnlineRow] = []
    scoring_s: dict[str, float] = {}


class Paths:
    """One problem's records with each path's per-token views (prefix + continuation j)."""

    def __init__(self, records: list[LabelRecord]) -> None:
        self.records = records
        self.K = min(r.K for r in records)
        self.full: dict[tuple[int, int], Branch] = {}  # (record idx, j) -> the whole path
        self.kv: list[PrefixKV] = []  # per record: prompt + prefix KV

    def prefix_branch(self, i: int) -> Branch:
        r, b = self.records[i], self.full[(i, 0)]
        n = r.prefix_len
        return Branch(i, b.prompt_ids, b.generated_ids[:n], r.prefix_text, b.logprobs[:n], b.top_logprobs[:n],
                      b.entropies[:n])


def _dists(logits: torch.Tensor, targets: torch.Tensor) -> tuple[list[float], list[list[float]], list[float]]:
    lp = torch.log_softmax(logits.float(), -1)
    chosen = lp.gather(-1, targets.view(-1, 1)).view(-1).tolist()
    top = lp.topk(TOP_K, -1).values.tolist()
    ent = (-(lp.exp() * lp).sum(-1)).tolist()
    return chosen, top, ent


@torch.no_grad()
def teacher_force(model: Any, group: list[LabelRecord], pad_id: int) -> Paths:
    """Forward a problem's paths once over its shared prompt KV: per-token views and each prefix's KV."""
    paths = Paths(group)
    r0 = group[0]
    prompt = r0.token_ids[: r0.prompt_len]
    dev = next(model.parameters()).device
    out = model(input_ids=torch.tensor([prompt], device=dev), use_cache=True)
    first_logits, cache = out.logits[0, -1], out.past_key_values
    rows = []
    for i, r in enumerate(group):
        conts = r.cont_token_ids or [[]]
        for j in range(paths.K if r.cont_token_ids else 1):
            rows.append((i, j, r.token_ids[r.prompt_len :] + conts[j]))
    width = max(len(g) for _, _, g in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long, device=dev)
    for n, (_, _, g) in enumerate(rows):
        ids[n, : len(g)] = torch.tensor(g)
    cache = expand_rows(cache, len(rows))  # the prompt's KV for every row (right padding: no mask needed, causal)
    res = model(input_ids=ids, past_key_values=cache, use_cache=True)
    logits, past = res.logits, res.past_key_values
    kv_of: dict[int, int] = {}
    for n, (i, j, g) in enumerate(rows):
        pred = torch.cat([first_logits.view(1, -1), logits[n, : len(g) - 1]], 0)  # predicts each token of g
        chosen, top, ent = _dists(pred, torch.tensor(g, device=dev))
        paths.full[(i, j)] = Branch(i, prompt, g, "", chosen, top, ent)
        kv_of.setdefault(i, n)
    for i, r in enumerate(group):
        n, length = kv_of[i], len(r.token_ids)
        paths.kv.append(PrefixKV(token_ids=list(r.token_ids), past=tuple(
            (lay.keys[n : n + 1, :, :length], lay.values[n : n + 1, :, :length]) for lay in past.layers)))
    return paths


def _vote_correct(answers: Sequence[str | None], truth: str) -> bool:
    top = majority_vote(list(answers))
    return top is not None and answers_match(top, truth)


def replay_keep(paths: Paths, scores: Sequence[float] | None, keep: int, rng: random.Random,
                draws: int = 20) -> tuple[float, float]:
    """(accuracy, tokens) of one problem pruned to its top ``keep`` prefixes (``scores=None``: random
    subsets, ``draws`` of them per continuation), averaged over the continuations j."""
    recs, idx = paths.records, list(range(len(paths.records)))
    acc = tok = 0.0
    for j in range(paths.K):
        subsets = ([rng.sample(idx, min(keep, len(idx))) for _ in range(draws)] if scores is None
                   else [sorted(kept_positions(scores, idx, min(keep, len(idx))))])
        for sub in subsets:
            acc += _vote_correct([recs[i].cont_answers[j] for i in sub], recs[0].answer) / len(subsets)
            tok += (sum(r.prefix_len for r in recs) + sum(recs[i].cont_lengths[j] - recs[i].prefix_len for i in sub)) / len(subsets)
    return acc / paths.K, tok / paths.K


def replay_online(paths: Paths, warmup: int, percentile: float, window: int, top_k: int) -> tuple[float, float]:
    """DeepConf online on the whole paths: the first ``warmup`` set the bar, the others stop once their
    window confidence falls below it; paths below the bar do not vote (``policy.online_*``)."""
    acc = tok = 0.0
    n = len(paths.records)
    for j in range(paths.K):
        confs = [token_confidences(paths.full[(i, j)], top_k) for i in range(n)]
        lowest = [lowest_window_mean(c, window) for c in confs]
        bar = online_threshold(lowest[:warmup], percentile)
        answers: list[str | None] = []
        for i in range(n):
            stop = None if i < warmup else online_stop_at(confs[i], window, bar)
            tok += len(confs[i]) if stop is None else stop
            if stop is None and online_votes(lowest[i], bar):
                answers.append(paths.records[i].cont_answers[j])
        acc += _vote_correct(answers, paths.records[0].answer)
    return acc / paths.K, tok / paths.K


def _result(per_problem: list[tuple[float, float]], boot: int, seed: int) -> KeepResult:
    accs = [a for a, _ in per_problem]
    lo, hi = bootstrap_ci(accs, boot, seed)
    return KeepResult(accuracy=sum(accs) / len(accs), ci_low=lo, ci_high=hi,
                      tokens=sum(t for _, t in per_problem) / len(per_problem))


ScoreFn = Callable[[Paths], list[float]]


def scorer_fn(name: str, options: dict[str, Any], rng: random.Random) -> ScoreFn:
    """A registered scorer applied to one problem's prefixes (diversity sees them together, as live)."""
    scorer = make_scorer(name, options)
    ctx = ScoreContext(backend=None, rng=rng)
    return lambda p: list(scorer.score([p.prefix_branch(i) for i in range(len(p.records))], ctx))


def stop_fn(checkpoint: str, model: Any) -> ScoreFn:
    """STOP over each prefix's KV: the ``stop`` scorer's own in-process path (``StopScorer.score_kvs``)."""
    from sglang_stop.scorers.stop.scorer import StopScorer

    scorer = make_scorer("stop", {"checkpoint": checkpoint})
    assert isinstance(scorer, StopScorer)
    return lambda p: scorer.score_kvs(model, p.kv)


def run_signals_bench(
    model: Any, records: Sequence[LabelRecord], scorers: dict[str, tuple[str, ScoreFn]], *, keeps: Sequence[int],
    online: Sequence[OnlineConfig] = (), pad_id: int = 0, boot: int = 2000, seed: int = 0, labels: str = "",
    model_name: str = "", progress: bool = False,
) -> SignalsBench:
    """``scorers``: row name -> (taxonomy type, score function); a row named ``stop`` is the one the
    others are compared with (paired)."""
    import time

    from tqdm import tqdm

    by: dict[str, list[LabelRecord]] = defaultdict(list)
    for r in records:
        by[r.problem_id].append(r)
    groups = [sorted(g, key=lambda r: r.prefix_idx) for g in by.values()]
    scores: dict[str, list[list[float]]] = {name: [] for name in scorers}
    spent: dict[str, float] = defaultdict(float)
    all_paths: list[Paths] = []
    rng = random.Random(seed)
    for g in tqdm(groups, desc="teacher-force and score", unit="problem", disable=not progress):
        t0 = time.perf_counter()
        p = teacher_force(model, g, pad_id)
        spent["teacher_force"] += time.perf_counter() - t0
        for name, (_, fn) in scorers.items():
            t0 = time.perf_counter()
            scores[name].append(fn(p))
            spent[name] += time.perf_counter() - t0
        for b in p.full.values():  # keep the per-token views, drop the KV
            b.prompt_ids = []
        p.kv = []
        all_paths.append(p)
    flat_groups = [r.problem_id for p in all_paths for r in p.records]
    good = [r.s_mc >= 0.5 for p in all_paths for r in p.records]
    per_keep: dict[str, dict[int, list[tuple[float, float]]]] = {}
    rows = []
    for name, (kind, _) in scorers.items():
        flat = [s for per in scores[name] for s in per]
        w, mixed = within_problem_auc(flat_groups, flat, good)
        per_keep[name] = {k: [replay_keep(p, s, k, rng) for p, s in zip(all_paths, scores[name])] for k in keeps}
        rows.append(SignalRow(name=name, type=kind, within_auc=_num(w), mixed_problems=mixed,
                              pooled_auc=_num(auc(flat, good)),
                              keep={k: _result(v, boot, seed) for k, v in per_keep[name].items()}))
    if "stop" in per_keep:
        for row in rows:
            if row.name != "stop":
                for k, res in row.keep.items():
                    res.p_stop_better = paired_win_rate(
                        [a for a, _ in per_keep["stop"][k]], [a for a, _ in per_keep[row.name][k]], boot, seed)
    everyone = [replay_keep(p, [0.0] * len(p.records), len(p.records), rng) for p in all_paths]
    online_rows = []
    for o in online:
        if any(not r.cont_token_ids for p in all_paths for r in p.records):
            break  # older labels without continuation tokens: nothing to replay
        replayed = [replay_online(p, o.warmup, o.percentile, o.window, o.top_k) for p in all_paths]
        online_rows.append(OnlineRow(name=f"deepconf-online p{o.percentile:g}", options=o.model_dump(),
                                     result=_result(replayed, boot, seed)))
    P = max(len(p.records) for p in all_paths)
    return SignalsBench(
        labels=labels, model=model_name, records=len(records), problems=len(all_paths), prefixes=P,
        continuations=min(p.K for p in all_paths), prefix_len=records[0].prefix_len,
        path_accuracy=sum(r.s_mc for r in records) / len(records), all_vote=_result(everyone, boot, seed),
        rows=rows, online=online_rows, scoring_s={k: round(v, 2) for k, v in spent.items()},
    )


def _num(x: float) -> float | None:
    return None if x != x else round(x, 4)


def signals_text(b: SignalsBench) -> str:
    from sglang_stop.tables import table

    keeps = sorted({k for r in b.rows for k in r.keep})
    head = (f"bench signals: {b.problems} problems ({b.records} prefixes, P={b.prefixes}, K={b.continuations}) "
            f"of {b.labels} on {b.model}; prune at {b.prefix_len} tokens; per-path accuracy {b.path_accuracy:.3f}; "
            f"all {b.prefixes} vote: {b.all_vote.accuracy:.3f} [{b.all_vote.ci_low:.3f}, {b.all_vote.ci_high:.3f}] "
            f"at {b.all_vote.tokens:.1f} tokens/problem")
    cols = ["scorer", "type", "within AUC", "pooled AUC"] + [f"keep {k}: acc [95% CI] / tokens" for k in keeps]
    rows = []
    for r in b.rows:
        cells = [f"{r.keep[k].accuracy:.3f} [{r.keep[k].ci_low:.3f}, {r.keep[k].ci_high:.3f}] / {r.keep[k].tokens:.0f}"
                 for k in keeps]
        rows.append([r.name, r.type, r.within_auc, r.pooled_auc, *cells])
    out = head + "\n" + table(cols, rows)
    for o in b.online:
        out += (f"\n{o.name} (window {o.options['window']}, warmup {o.options['warmup']}): "
                f"{o.result.accuracy:.3f} [{o.result.ci_low:.3f}, {o.result.ci_high:.3f}] at {o.result.tokens:.1f} tokens/problem")
    return out


def signals_png(b: SignalsBench, path: str) -> None:
    """Accuracy vs tokens per problem: one line per scorer over its keeps, the unpruned vote and online
    rows as points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sglang_stop.io import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in b.rows:
        ks = sorted(r.keep)
        ax.plot([r.keep[k].tokens for k in ks], [r.keep[k].accuracy for k in ks], marker="o",
                label=f"{r.name} ({r.type})", linewidth=2.5 if r.name == "stop" else 1.2)
    ax.scatter([b.all_vote.tokens], [b.all_vote.accuracy], marker="*", s=160, color="black",
               label=f"all {b.prefixes} vote", zorder=5)
    for o in b.online:
        ax.scatter([o.result.tokens], [o.result.accuracy], marker="x", s=80, label=o.name, zorder=5)
    ax.set_xlabel("tokens per problem")
    ax.set_ylabel("majority-vote accuracy")
    ax.set_title(f"{b.model}: {b.problems} held-out problems, prune at {b.prefix_len} tokens (keep 1, 2, 4)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
