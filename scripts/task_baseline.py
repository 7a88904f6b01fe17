"""Baseline accuracy of a model on a task with plain HF ``generate`` (no pruning, no SGLang).

Samples ``--n`` paths per problem in one batch and reports per-sample, majority@n and pass@n
accuracy; one JSONL record per path goes to ``--out``. Used for docs/tasks.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sglang_stop.aggregate import majority_vote
from sglang_stop.models import load_model
from sglang_stop.tasks import extract_answer, load_task


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--task", default="default")
    ap.add_argument("--model", default=None, help="local HF dir; default: embedded SmolLM2-135M")
    ap.add_argument("--problems", type=int, default=15)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-new-tokens", type=int, default=192)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--top-k", type=int, default=40)
    ap.add_argument("--out", type=Path, default=Path("task_baseline.jsonl"))
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads; on a shared 2-core box 1 thread ran 6x faster than 2 (15 vs 2.3 tok/s)")
    ap.add_argument("--rescore", type=Path, default=None,
                    help="re-extract and re-score the texts of an earlier --out file instead of generating")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    task = load_task(args.task)
    if args.rescore is not None:
        rows = [json.loads(line) for line in args.rescore.read_text().splitlines() if line.strip()]
        probs = {p.id: p for p in task.problems(args.problems, args.seed)}
        for r in rows:
            r["answer"], r["correct"] = task.check(probs[r["problem"]], r["text"])
            r["strict_answer"] = extract_answer(r["text"], last_number_fallback=False)
        summarize(rows, task, [probs[i] for i in dict.fromkeys(r["problem"] for r in rows)], args.n)
        return
    model, tok = load_model(args.model)
    device = next(model.parameters()).device
    eos = tok.eos_token_id
    probs = task.problems(args.problems, args.seed)
    rows, t0, gen_tokens = [], time.perf_counter(), 0
    with open(args.out, "w") as out:
        for pi, p in enumerate(probs):
            prompt = task.format_prompt(p.question)
            if task.chat_template:
                text = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
            else:
                text = prompt
            ids = tok(text, return_tensors="pt", add_special_tokens=not task.chat_template).input_ids.to(device)
            torch.manual_seed(args.seed * 100_003 + pi)
            ids = ids.repeat(args.n, 1)
            with torch.no_grad():
                gen = model.generate(
                    ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=args.temperature, top_p=args.top_p,
                    top_k=args.top_k, max_new_tokens=args.max_new_tokens, pad_token_id=tok.pad_token_id,
                )[:, ids.shape[1]:]
            answers, correct = [], []
            for j, row in enumerate(gen.tolist()):
                length = row.index(eos) + 1 if eos in row else len(row)
                gen_tokens += length
                out_text = tok.decode(row[:length], skip_special_tokens=True)
                ans, ok = task.check(p, out_text)
                strict = extract_answer(out_text, last_number_fallback=False) if task.chat_template else ans
                answers.append(ans)
                correct.append(ok)
                rec = {"problem": p.id, "source": p.source, "gold": p.answer, "path": j, "answer": ans,
                       "strict_answer": strict, "correct": ok, "tokens": length, "text": out_text}
                out.write(json.dumps(rec) + "\n")
                rows.append(rec)
            vote = majority_vote(answers)
            print(f"{pi + 1}/{len(probs)} {p.id} gold={p.answer} vote={vote} {sum(correct)}/{args.n} "
                  f"[{time.perf_counter() - t0:.0f}s, {gen_tokens / (time.perf_counter() - t0):.0f} tok/s]", flush=True)
    summarize(rows, task, probs, args.n)


def summarize(rows: list[dict], task, probs, n: int) -> None:
    by_p: dict[str, list[dict]] = {}
    for r in rows:
        by_p.setdefault(r["problem"], []).append(r)
    gold = {p.id: p for p in probs}

    def report(name: str, ids: list[str]) -> None:
        paths = [r for i in ids for r in by_p[i]]
        maj = [task.is_correct(gold[i], majority_vote([r["answer"] for r in by_p[i]])) for i in ids]
        maj_strict = [task.is_correct(gold[i], majority_vote([r["strict_answer"] for r in by_p[i]])) for i in ids]
        print(f"{name}: problems {len(ids)}, per-sample {sum(r['correct'] for r in paths) / len(paths):.3f}, "
              f"majority@{n} {sum(maj) / len(ids):.3f} (strict 'The answer is'/boxed only: {sum(maj_strict) / len(ids):.3f}), "
              f"pass@{n} {sum(any(r['correct'] for r in by_p[i]) for i in ids) / len(ids):.3f}, "
              f"mean tokens {sum(r['tokens'] for r in paths) / len(paths):.1f}, "
              f"no strict answer {sum(r['strict_answer'] is None for r in paths) / len(paths):.2f}")

    report("all", list(by_p))
    for src in dict.fromkeys(gold[i].source for i in by_p):
        report(src.split(":")[0], [i for i in by_p if gold[i].source == src])


if __name__ == "__main__":
    main()
