"""How many of the reasoner's wrong paths show their slip by the prune point, at several prune points?

``tasks.reasoner.written_slip`` flags a prefix whose finished lines show a slip; a scorer that reads the
prefix can at best know what the prefix shows, so "no written slip" is the ceiling of STOP, a probe or a
verifier at that prune point. Reads whole held-out paths (``label -P 16 -K 1`` records) and cuts them at
each prune point; needs the tokenizer only (no forward pass).

``--model-probs`` also teacher-forces every path through the reasoner (``bench signals``' own
``teacher_force``) and asks what the model thought when it wrote each path's first slip: the probability
it gave the slipped result's tokens, and whether each was its own top choice. A slip the model wrote as its
top choice is one it believes: neither its token probabilities nor (the probes say) its hidden states can
flag it, so no internal signal, learned or not, can; only a check of the arithmetic itself can.

Usage: PYTHONPATH=. python scripts/reasoner_slips.py EVAL_PATHS [--at 16,24,32,40,48] [--model-probs] [--out JSON]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence

from transformers import AutoTokenizer

from sglang_stop.models import REASONER_NAME, model_dir_of
from sglang_stop.tasks.reasoner import written_slip
from sglang_stop.training.labels import load_labels
from sglang_stop.training.metrics import within_problem_auc


def first_slip(problem_id: str, gen: Sequence[int], piece: Callable[[int], str],
               decode: Callable[[Sequence[int]], str]) -> tuple[int, list[int]] | None:
    """(token count at which a slip first shows, positions of that line's result tokens) or None. A slip
    shows when its line ends, so only newline tokens are checked; the result is what follows its last '='."""
    for t in range(1, len(gen) + 1):
        if "\n" in piece(gen[t - 1]) and written_slip(problem_id, decode(gen[:t])):
            j, res = t - 2, []
            while j >= 0 and "=" not in piece(gen[j]):
                res.append(j)
                j -= 1
            return t, res[::-1]
    return None


def model_view(recs: list, tok: AutoTokenizer) -> dict:
    """Teacher-force each problem's paths once; for every path's first slip, the probability the model gave
    the slipped result tokens and whether each was its top choice."""
    import torch

    from sglang_stop.bench.signals import teacher_force
    from sglang_stop.models import load_model

    torch.set_num_threads(2)
    model, _ = load_model(REASONER_NAME)
    pieces: dict[int, str] = {}

    def piece(t: int) -> str:
        if t not in pieces:
            pieces[t] = tok.decode([t])
        return pieces[t]

    groups: dict[str, list] = defaultdict(list)
    for r in recs:
        groups[r.problem_id].append(r)
    slips: list[dict] = []
    for n, (pid, group) in enumerate(groups.items()):
        paths = teacher_force(model, group, tok.pad_token_id or 0)
        for i, r in enumerate(group):
            b = paths.full[(i, 0)]
            found = first_slip(pid, b.generated_ids, piece, tok.decode)
            if found is None or not found[1]:
                continue
            t, res = found
            probs = [math.exp(b.logprobs[k]) for k in res]
            top = [b.logprobs[k] >= b.top_logprobs[k][0] - 1e-6 for k in res]
            slips.append({"family": pid.split("[")[0], "shows_at": t, "min_prob": min(probs), "believed": all(top),
                          "ended_right": r.s_mc >= 0.5})
        if n % 20 == 0:
            print(f"teacher-forced {n + 1}/{len(groups)} problems", flush=True)
    bins = [(0.0, 0.01), (0.01, 0.05), (0.05, 0.2), (0.2, 0.5), (0.5, 1.01)]
    out: dict = {"paths": len(recs), "paths_with_slip": len(slips),
                 "min_result_prob_bins": {f"[{lo}, {min(hi, 1.0)}{')' if hi < 1 else ']'}":
                                          sum(lo <= x["min_prob"] < hi for x in slips) for lo, hi in bins},
                 "believed": sum(x["believed"] for x in slips), "families": {}}
    for fam in sorted({x["family"] for x in slips}):
        xs = [x for x in slips if x["family"] == fam]
        out["families"][fam] = {"slips": len(xs), "median_min_prob": statistics.median(x["min_prob"] for x in xs),
                                "believed": sum(x["believed"] for x in xs),
                                "median_shows_at": statistics.median(x["shows_at"] for x in xs),
                                "ended_right": sum(x["ended_right"] for x in xs)}
    print(f"{len(slips)} of {len(recs)} paths write a slip; the model's probability of the slipped result "
          f"(lowest of its tokens): {out['min_result_prob_bins']}; written as the model's top choice: "
          f"{out['believed']} ({out['believed'] / max(1, len(slips)):.0%})")
    for fam, v in out["families"].items():
        print(f"  {fam}: {v['slips']} slips, median probability {v['median_min_prob']:.3f}, top choice "
              f"{v['believed']}, shows at token {v['median_shows_at']:g} (median), ended right anyway {v['ended_right']}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("eval_paths")
    ap.add_argument("--at", default="16,24,32,40,48", help="prune points, generated tokens")
    ap.add_argument("--model-probs", action="store_true",
                    help="also teacher-force the paths: how probable was each first slip to the model?")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    tok = AutoTokenizer.from_pretrained(str(model_dir_of(REASONER_NAME)))
    recs = load_labels(a.eval_paths)
    gen = [r.token_ids[r.prompt_len :] + (r.cont_token_ids or [[]])[0] for r in recs]
    good = [r.s_mc >= 0.5 for r in recs]
    rows = []
    for at in (int(x) for x in a.at.split(",")):
        slip = [written_slip(r.problem_id, tok.decode(g[:at])) for r, g in zip(recs, gen)]
        auc, mixed = within_problem_auc([r.problem_id for r in recs], [0.0 if s else 1.0 for s in slip], good)
        wrong = [s for s, ok in zip(slip, good) if not ok]
        right = [s for s, ok in zip(slip, good) if ok]
        rows.append({"prune_at": at, "oracle_within_auc": auc, "mixed_problems": mixed,
                     "wrong_with_slip": sum(wrong) / len(wrong), "right_with_slip": sum(right) / len(right),
                     "ended_before": sum(len(g) <= at for g in gen) / len(gen)})
        print(f"prune at {at:>3}: 'no written slip' within AUC {auc:.3f}; slip visible in {rows[-1]['wrong_with_slip']:.3f} "
              f"of wrong and {rows[-1]['right_with_slip']:.3f} of right paths; {rows[-1]['ended_before']:.3f} of paths "
              "ended by then", flush=True)
    result: dict = {"prune_points": rows}
    if a.model_probs:
        result["model_view"] = model_view(recs, tok)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
