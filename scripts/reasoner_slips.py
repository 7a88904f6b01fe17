"""How many of the reasoner's wrong paths show their slip by the prune point, at several prune points?

``tasks.reasoner.written_slip`` flags a prefix whose finished lines show a slip; a scorer that reads the
prefix can at best know what the prefix shows, so "no written slip" is the ceiling of STOP, a probe or a
verifier at that prune point. Reads whole held-out paths (``label -P 16 -K 1`` records) and cuts them at
each prune point; needs the tokenizer only (no forward pass).

Usage: PYTHONPATH=. python scripts/reasoner_slips.py EVAL_PATHS [--at 16,24,32,40,48] [--out JSON]
"""

from __future__ import annotations

import argparse
import json

from transformers import AutoTokenizer

from sglang_stop.models import REASONER_NAME, model_dir_of
from sglang_stop.tasks.reasoner import written_slip
from sglang_stop.training.labels import load_labels
from sglang_stop.training.metrics import within_problem_auc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("eval_paths")
    ap.add_argument("--at", default="16,24,32,40,48", help="prune points, generated tokens")
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
    if a.out:
        with open(a.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
