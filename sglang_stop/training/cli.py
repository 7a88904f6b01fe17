"""Click commands ``label`` and ``train`` (the main ``sglang-stop`` CLI adds them to its group)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from sglang_stop.errors import UserError


def _load_model(path: str | None, threads: int):
    """The runtime's loader (None = the embedded default), fp32 on CPU, with ``threads`` torch threads."""
    import torch

    from sglang_stop.models import load_model

    torch.set_num_threads(threads)
    return load_model(path, device="cpu", dtype="float32")


def _problems(task, problems_jsonl: str | None, n: int, seed: int, split: str) -> list[dict]:
    """Problems as ``{id, question, answer, problem}`` dicts (``problem``: the task's ``Problem``, which
    its scoring takes); the testbed draws from ``split`` (label/eval)."""
    from sglang_stop.tasks import Problem

    if problems_jsonl:
        rows = [json.loads(line) for line in Path(problems_jsonl).read_text().splitlines() if line.strip()]
        for i, r in enumerate(rows, 1):
            missing = {"id", "question", "answer"} - set(r)
            if missing:
                raise UserError(f"{problems_jsonl}:{i}: missing {sorted(missing)}")
        rows = rows[:n]
    elif task.spec == "testbed":
        from sglang_stop.testbed.data import make_problems

        rows = make_problems(n, seed, split=split)  # type: ignore[arg-type]
    else:
        return [{"id": p.id, "question": p.question, "answer": p.answer, "problem": p} for p in task.problems(n, seed)]
    return [
        {**r, "problem": Problem(id=str(r["id"]), question=r["question"], answer=str(r["answer"]), source=task.spec)}
        for r in rows
    ]


def _run(fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except UserError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)


@click.command("label")
@click.option("--model", "model_dir", default=None,
              help="HF model dir (default: the testbed model for --task testbed, else the embedded SmolLM2)")
@click.option("--task", default="testbed", show_default=True, help="any `sglang-stop run --task` spec")
@click.option("--problems-jsonl", default=None, help="problems {id, question, answer}, scored as --task")
@click.option("--split", default="label", show_default=True, help="testbed split: label (STOP training) or eval")
@click.option("--problems", "n", default=500, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("-P", "--prefixes", default=8, show_default=True)
@click.option("-K", "--continuations", default=16, show_default=True)
@click.option("--prefix-len", default=16, show_default=True, help="prune point in generated tokens")
@click.option("--max-new-tokens", default=64, show_default=True)
@click.option("--temperature", default=1.0, show_default=True)
@click.option("--top-p", default=1.0, show_default=True)
@click.option("--top-k", default=-1, show_default=True, help="-1: off")
@click.option("--batch-size", default=512, show_default=True, help="sampler rows per generate call")
@click.option("--problems-per-batch", default=32, show_default=True,
              help="problems whose P*K continuations are sampled together")
@click.option("--threads", default=1, show_default=True)
@click.option("--out", required=True, help="label JSONL (appended; existing pairs are skipped)")
def label_cmd(model_dir, task, problems_jsonl, split, n, seed, prefixes, continuations, prefix_len, max_new_tokens,
              temperature, top_p, top_k, batch_size, problems_per_batch, threads, out) -> None:
    """Monte Carlo labels: P prefixes x K continuations per problem -> s_mc records.

    Prompts are formatted and answers checked exactly as `sglang-stop run` does for the task
    (chat template, reasoning-gym's own scoring), so the prefixes are the runtime's prefixes.
    """
    from sglang_stop.config import RuntimeConfig
    from sglang_stop.runner import format_prompt
    from sglang_stop.tasks import load_task
    from sglang_stop.testbed import asset_dir
    from sglang_stop.training.hf_sampler import HFSampler
    from sglang_stop.training.labels import LabelJob, label_problems

    def go() -> None:
        the_task = load_task(task)  # also scores --problems-jsonl rows
        default_dir = str(asset_dir()) if the_task.spec == "testbed" else None
        model, tok = _load_model(model_dir or default_dir, threads)
        job = LabelJob(prefixes=prefixes, continuations=continuations, prefix_len=prefix_len,
                       max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                       seed=seed, problems_per_batch=problems_per_batch)
        probs = _problems(the_task, problems_jsonl, n, seed, split)
        sampler = HFSampler(model, tok.eos_token_id, tok.pad_token_id, batch_size=batch_size)
        cfg = RuntimeConfig()

        def encode(q: str) -> list[int]:  # what LocalBackend feeds the model for a fresh prompt
            return list(tok(format_prompt(the_task, cfg, tok, q), add_special_tokens=True)["input_ids"])

        written = label_problems(
            probs, out, job, sampler,
            encode_prompt=encode,
            decode=lambda ids: tok.decode(ids, skip_special_tokens=True),
            check=lambda p, text: the_task.check(p["problem"], text),
            progress=lambda i, t: click.echo(f"{i}/{t} problems", err=True),
        )
        click.echo(f"wrote {written} records to {out}")

    _run(go)


@click.command("train")
@click.option("--model", "model_dir", default=None, help="HF base model dir (default: the embedded testbed model)")
@click.option("--labels", required=True, multiple=True, help="label JSONL file(s)")
@click.option("--out", required=True, help="checkpoint directory (written atomically)")
@click.option("--k", "num_assess_tokens", default=4, show_default=True, help="[STOP] tokens")
@click.option("--lora-r", default=16, show_default=True)
@click.option("--lora-alpha", default=32.0, show_default=True)
@click.option("--epochs", default=10, show_default=True)
@click.option("--batch-size", default=32, show_default=True)
@click.option("--lr", default=1e-3, show_default=True)
@click.option("--weight-decay", default=0.0, show_default=True)
@click.option("--lora-dropout", default=0.05, show_default=True)
@click.option("--val-fraction", default=0.2, show_default=True)
@click.option("--select", type=click.Choice(["mse", "within_auc"]), default="mse", show_default=True)
@click.option("--hard-labels", is_flag=True, help="ablation: s_mc >= 0.5 one-hot targets")
@click.option("--no-adapter", is_flag=True, help="ablation: linear probe on the base's last hidden state")
@click.option("--seed", default=0, show_default=True)
@click.option("--threads", default=1, show_default=True)
def train_cmd(model_dir, labels, out, num_assess_tokens, lora_r, lora_alpha, epochs, batch_size, lr, weight_decay,
              lora_dropout, val_fraction, select, hard_labels, no_adapter, seed, threads) -> None:
    """Train a STOP checkpoint (keeps the best validation epoch)."""
    from sglang_stop.testbed import asset_dir
    from sglang_stop.training.labels import load_labels
    from sglang_stop.training.train import TrainConfig, train_stop

    def go() -> None:
        model, tok = _load_model(model_dir or str(asset_dir()), threads)
        records = [r for f in labels for r in load_labels(f)]
        cfg = TrainConfig(num_assess_tokens=num_assess_tokens, lora_r=lora_r, lora_alpha=lora_alpha, epochs=epochs,
                          batch_size=batch_size, lr=lr, weight_decay=weight_decay, lora_dropout=lora_dropout,
                          val_fraction=val_fraction, select=select,
                          hard_labels=hard_labels, no_adapter=no_adapter, seed=seed)
        best = train_stop(model, records, cfg, out, tokenizer=tok, pad_id=tok.pad_token_id or 0)
        click.echo(f"best epoch {best['epoch']}: " + json.dumps({k: v for k, v in best.items() if k != "epoch"}))

    _run(go)


@click.group()
def main() -> None:
    """STOP scorer training (standalone group; also wired into `sglang-stop`)."""


main.add_command(label_cmd)
main.add_command(train_cmd)

if __name__ == "__main__":
    main()
