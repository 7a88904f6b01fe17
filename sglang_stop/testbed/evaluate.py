"""Compare scorers on held-out label records at one prune point:
``python -m sglang_stop.testbed.evaluate --labels eval.jsonl --stop CKPT [--probe CKPT]``.

Scorers: STOP (and its no-adapter probe) through the same StopNet path as inference, the registered
``confidence``/``entropy`` heuristics fed with teacher-forced top-k logprobs of the prefix, the
``check_steps`` oracle, and random. Figures: within-problem AUC (good := s_mc >= 0.5), pooled AUC,
pruning accuracy (mean s_mc of each problem's top quarter) and majority vote of the top 4 of P.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence

import click
import torch

from sglang_stop.scorers import Branch, ScoreContext, make_scorer
from sglang_stop.testbed.data import check_steps
from sglang_stop.training.labels import LabelRecord, load_labels
from sglang_stop.training.metrics import auc, kept_accuracy, vote_accuracy, within_problem_auc


@torch.no_grad()
def heuristic_branches(model, records: Sequence[LabelRecord], top_k: int = 20) -> list[Branch]:
    """Branch views with the (untempered) logprobs a backend records while sampling."""
    out = []
    for r in records:
        logits = model(input_ids=torch.tensor([r.token_ids])).logits[0].float()
        lp = torch.log_softmax(logits[r.prompt_len - 1 : -1], -1)  # predicts each generated token
        gen = r.token_ids[r.prompt_len :]
        chosen = lp[torch.arange(len(gen)), torch.tensor(gen)].tolist()
        top = lp.topk(min(top_k, lp.shape[-1]), -1).values.tolist()
        ent = (-(lp.exp() * lp).sum(-1)).tolist()
        out.append(Branch(0, r.token_ids[: r.prompt_len], gen, r.prefix_text, chosen, top, ent))
    return out


def figures(name: str, scores: Sequence[float], records: Sequence[LabelRecord], keep: int = 4) -> dict:
    groups = [r.problem_id for r in records]
    good = [r.s_mc >= 0.5 for r in records]
    w, n = within_problem_auc(groups, scores, good)
    truth = {r.problem_id: r.answer for r in records}
    answers = [r.cont_answers for r in records]
    return {
        "scorer": name,
        "within_auc": round(w, 3),
        "mixed_problems": n,
        "pooled_auc": round(auc(scores, good), 3),
        "kept_acc": round(kept_accuracy(groups, scores, [r.s_mc for r in records]), 3),
        f"vote_top{keep}": round(vote_accuracy(groups, scores, answers, truth, keep), 3),
    }


@click.command()
@click.option("--labels", required=True, help="held-out label JSONL (testbed eval split)")
@click.option("--model", "model_dir", default=None, help="HF model dir (default: the embedded testbed model)")
@click.option("--stop", "stop_ckpt", default=None, help="STOP checkpoint (default: the embedded one)")
@click.option("--probe", "probe_ckpt", default=None, help="--no-adapter checkpoint (linear probe)")
@click.option("--top-k", default=5, show_default=True, help="confidence top-k (vocab is only 20)")
@click.option("--keep", default=4, show_default=True)
@click.option("--val-fraction", type=float, default=None,
              help="score only the validation problems `train --val-fraction` held out of these labels")
@click.option("--threads", default=1, show_default=True)
@click.option("--json-out", default=None)
def main(labels, model_dir, stop_ckpt, probe_ckpt, top_k, keep, val_fraction, threads, json_out) -> None:
    from sglang_stop.models import load_model
    from sglang_stop.scorers.stop import load_checkpoint
    from sglang_stop.testbed import asset_dir, stop_asset_dir
    from sglang_stop.training.train import predict, split_by_problem

    torch.set_num_threads(threads)
    model, _ = load_model(model_dir or str(asset_dir()), device="cpu", dtype="float32")
    recs = load_labels(labels)
    if val_fraction is not None:
        recs = split_by_problem(recs, val_fraction)[1]
    testbed = all(r.question.startswith("Q") for r in recs)
    rows = []
    for name, ck in (("stop", stop_ckpt or stop_asset_dir()), ("no_adapter_probe", probe_ckpt)):
        if ck:
            rows.append(figures(name, predict(load_checkpoint(ck, model), model, recs), recs, keep))
    branches = heuristic_branches(model, recs, top_k=max(top_k, 20))
    ctx = ScoreContext(backend=None, rng=random.Random(0))
    rows.append(figures(f"confidence(top{top_k})", make_scorer("confidence", {"top_k": top_k}).score(branches, ctx), recs, keep))
    rows.append(figures("entropy", make_scorer("entropy").score(branches, ctx), recs, keep))
    lowest = make_scorer("logprob", {"window": 1, "reduce": "lowest"})
    rows.append(figures("logprob(min chosen token)", lowest.score(branches, ctx), recs, keep))
    if testbed:
        rows.append(figures("check_steps oracle", [float(check_steps(r.question + r.prefix_text)) for r in recs], recs, keep))
    rng = random.Random(0)
    rows.append(figures("random", [rng.random() for _ in recs], recs, keep))
    groups = [r.problem_id for r in recs]
    truth = {r.problem_id: r.answer for r in recs}
    answers = [r.cont_answers for r in recs]
    base = {
        "records": len(recs),
        "problems": len(truth),
        "mean_s_mc": round(sum(r.s_mc for r in recs) / len(recs), 3),
        "vote_all": round(vote_accuracy(groups, [0.0] * len(recs), answers, truth, keep=10**9), 3),
        f"vote_random{keep}": round(vote_accuracy(groups, None, answers, truth, keep), 3),
    }
    click.echo(json.dumps(base))
    for r in rows:
        click.echo(json.dumps(r))
    if json_out:
        with open(json_out, "w") as f:
            json.dump({"baseline": base, "scorers": rows}, f, indent=1)
    if any(isinstance(v, float) and math.isnan(v) for r in rows for v in r.values()):
        click.echo("warning: some figures are nan (too few mixed problems)", err=True)


if __name__ == "__main__":
    main()
