"""STOP and its ablations on one label set, the prefixes encoded once for all of them.

The paper's Type IV ablations (soft vs hard labels, adapter vs linear probe, k [STOP] tokens) differ only
in what is trained on the frozen base's prefix KV, so one encoding (``train.PromptSharedKV``) serves every
variant: on the reasoner's whole-path labels the encoding is most of a training run's time. Each variant is
``sglang-stop train`` with the shared settings plus its own (TrainConfig fields as JSON); its checkpoint goes
to ``OUT/NAME`` and its best validation epoch is appended to ``OUT/ablations.jsonl``. A rerun skips the
variants already in that file (resumable after a kill).

Usage: PYTHONPATH=. python scripts/stop_ablations.py --model smollm2-reasoner --labels L [--labels L2]
           [--prefix-len 24] --out runs/reasoner/abl [--base '{"lora_r": 4}'] [--variant NAME=JSON ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sglang_stop.io import JsonlAppender
from sglang_stop.training.labels import load_labels, recut
from sglang_stop.training.train import PromptSharedKV, TrainConfig, checked_split, encode_all, train_stop

# The set: STOP as trained (soft labels, k=4) and one change each.
DEFAULT_VARIANTS = {
    "stop-k4": {},
    "hard-labels": {"hard_labels": True},
    "k1": {"num_assess_tokens": 1},
    "k8": {"num_assess_tokens": 8},
    "no-adapter": {"no_adapter": True, "lr": 3e-3},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--labels", action="append", required=True)
    ap.add_argument("--prefix-len", type=int, default=None, help="re-cut whole-path labels at this prune point")
    ap.add_argument("--out", required=True)
    ap.add_argument("--base", default="{}", help="TrainConfig fields shared by every variant (JSON)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=JSON",
                    help="a variant's own TrainConfig fields (default: the issue's set)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    import torch

    from sglang_stop.models import load_model

    base = json.loads(a.base)
    variants = {n: json.loads(j or "{}") for n, _, j in (v.partition("=") for v in a.variant)} or DEFAULT_VARIANTS
    cfgs = {n: TrainConfig(**{**base, **v}) for n, v in variants.items()}  # a bad field fails before any work
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    log_p = out / "ablations.jsonl"
    done = {json.loads(line)["variant"] for line in log_p.read_text().splitlines()} if log_p.is_file() else set()
    todo = {n: c for n, c in cfgs.items() if n not in done}
    if not todo:
        print(f"every variant is in {log_p}")
        return
    torch.set_num_threads(a.threads)
    model, tok = load_model(a.model)
    records = [r for f in a.labels for r in load_labels(f)]
    if a.prefix_len is not None:
        records = recut(records, a.prefix_len, tok.decode)
    train, val = checked_split(records, next(iter(todo.values())).val_fraction)
    print(f"{len(records)} records of {len({r.problem_id for r in records})} problems; "
          f"{len(train)} train / {len(val)} validation; variants: {', '.join(todo)}", flush=True)
    store = PromptSharedKV(model, keep_kv=any(not c.no_adapter for c in todo.values()))
    encode_all(store, [*train, *val], "encode prefixes", progress=True)
    log = JsonlAppender(log_p)
    for name, cfg in todo.items():
        print(f"== {name}: {json.dumps(variants[name])}", flush=True)
        best = train_stop(model, records, cfg, out / name, tokenizer=tok, pad_id=tok.pad_token_id or 0,
                          log=lambda row: print(json.dumps(row), flush=True), progress=True, store=store)
        log.append({"variant": name, "config": cfg.model_dump(mode="json"), "best": best})
    log.close()


if __name__ == "__main__":
    main()
