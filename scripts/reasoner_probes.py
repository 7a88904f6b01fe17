"""What do the reasoner's hidden states hold about a path at the prune point? Ridge probes per layer.

For every record (prompt + 16-token prefix) the base model's hidden states are read at each layer: the last
prefix token's state and the mean over the prefix's tokens. Features and targets are centred per problem,
so a probe can only learn what separates a problem's paths from each other (pooled probes mostly learn
difficulty). Two readings per layer, both scored as held-out within-problem AUC (good := path correct):

  train-on-labels  ridge fitted on the Monte Carlo label records (target s_mc), tested on the held-out paths:
                   what STOP could learn from these labels if it read this layer linearly;
  cv-on-eval       5-fold grouped (by problem) CV inside the held-out paths (target: outcome): what the
                   layer holds with ~2.5k paths to learn from.

The ridge penalty is chosen by grouped CV on the label records. The min chosen-token logprob of the prefix
is printed beside them for reference.

Usage: PYTHONPATH=. python scripts/reasoner_probes.py LABELS EVAL_PATHS [--model smollm2-reasoner] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import torch

from sglang_stop.models import load_model
from sglang_stop.training.labels import LabelRecord, load_labels
from sglang_stop.training.metrics import within_problem_auc

LAMBDAS = (1e0, 1e1, 1e2, 1e3, 1e4)


@torch.no_grad()
def features(model: torch.nn.Module, records: list[LabelRecord]) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Per-layer last/mean prefix states (problem-centred) and each record's min chosen-token logprob."""
    by: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        by[r.problem_id].append(i)
    feats: dict[str, list[torch.Tensor]] = defaultdict(list)
    order: list[int] = []
    minlp = [0.0] * len(records)
    for n, (pid, idx) in enumerate(by.items()):
        rs = [records[i] for i in idx]
        lens = {len(r.token_ids) for r in rs}
        groups = [[i for i in idx if len(records[i].token_ids) == L] for L in sorted(lens)]
        for g in groups:
            ids = torch.tensor([records[i].token_ids for i in g])
            P = records[g[0]].prompt_len
            out = model(input_ids=ids, output_hidden_states=True)
            lp = torch.log_softmax(out.logits[:, P - 1 : -1].float(), -1).gather(-1, ids[:, P:, None])[..., 0]
            for row, i in enumerate(g):
                minlp[i] = lp[row].min().item()
            for li, h in enumerate(out.hidden_states):
                feats[f"last{li}"].append(h[:, -1].float().clone())  # a copy: a view would keep all of h alive
                feats[f"mean{li}"].append(h[:, P:].float().mean(1))
            order.extend(g)
        if n % 20 == 0:
            print(f"  features: {n + 1}/{len(by)} problems", flush=True)
    inv = torch.empty(len(order), dtype=torch.long)
    inv[torch.tensor(order)] = torch.arange(len(order))
    return {k: torch.cat(v)[inv] for k, v in feats.items()}, minlp


def centred(X: torch.Tensor, groups: list[str]) -> torch.Tensor:
    out = X.clone()
    by: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        by[g].append(i)
    for idx in by.values():
        t = torch.tensor(idx)
        out[t] -= X[t].mean(0, keepdim=True)
    return out


def ridge(X: torch.Tensor, y: torch.Tensor, lam: float) -> torch.Tensor:
    X64, y64 = X.double(), y.double()
    A = X64.T @ X64 + lam * torch.eye(X.shape[1], dtype=torch.float64)
    return torch.linalg.solve(A, X64.T @ y64).float()


def folds(groups: list[str], k: int = 5) -> list[torch.Tensor]:
    rank = {g: n for n, g in enumerate(sorted(set(groups)))}
    return [torch.tensor([i for i, g in enumerate(groups) if rank[g] % k == f]) for f in range(k)]


def cv_auc(X: torch.Tensor, y: torch.Tensor, groups: list[str], good: list[bool], lam: float) -> float:
    scores = torch.empty(len(groups))
    for te in folds(groups):
        tr = torch.tensor(sorted(set(range(len(groups))) - set(te.tolist())))
        mu, sd = X[tr].mean(0), X[tr].std(0) + 1e-6
        w = ridge((X[tr] - mu) / sd, y[tr], lam)
        scores[te] = ((X[te] - mu) / sd) @ w
    return within_problem_auc(groups, scores.tolist(), good)[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("labels")
    ap.add_argument("eval_paths")
    ap.add_argument("--model", default="smollm2-reasoner")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="JSON of every layer's figures")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model, _ = load_model(a.model)
    model.eval()
    tr_recs, ev_recs = load_labels(a.labels), load_labels(a.eval_paths)
    print(f"train records {len(tr_recs)}, eval paths {len(ev_recs)}", flush=True)
    Ftr, _ = features(model, tr_recs)
    Fev, minlp = features(model, ev_recs)
    gtr = [r.problem_id for r in tr_recs]
    gev = [r.problem_id for r in ev_recs]
    good = [r.s_mc >= 0.5 for r in ev_recs]
    ytr = torch.tensor([r.s_mc for r in tr_recs])
    ytr_c = centred(ytr[:, None], gtr)[:, 0]
    yev_c = centred(torch.tensor([float(g) for g in good])[:, None], gev)[:, 0]
    ref = within_problem_auc(gev, minlp, good)[0]
    print(f"reference: min chosen-token logprob within AUC {ref:.3f}")
    print(f"{'feature':>8} {'lambda':>7} {'labels->eval':>12} {'cv-on-eval':>10}")
    rows = []
    for name in Ftr:
        Xtr, Xev = centred(Ftr[name], gtr), centred(Fev[name], gev)
        lam = max(LAMBDAS, key=lambda lam: cv_auc(Xtr, ytr_c, gtr, [y > 0 for y in ytr_c.tolist()], lam))
        mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-6
        w = ridge((Xtr - mu) / sd, ytr_c, lam)
        transfer = within_problem_auc(gev, (((Xev - mu) / sd) @ w).tolist(), good)[0]
        cv = cv_auc(Xev, yev_c, gev, good, lam)
        rows.append({"feature": name, "lambda": lam, "labels_to_eval": transfer, "cv_on_eval": cv})
        print(f"{name:>8} {lam:7.0e} {transfer:12.3f} {cv:10.3f}", flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"reference_min_logprob": ref, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
