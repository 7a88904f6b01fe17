"""Click commands ``label`` and ``train`` (the main ``sglang-stop`` CLI adds them to its group).

Every flag, file and resumed labels file is checked before the model loads; a bad one is a
UserError (one ``error:`` line, exit 2, printed by the group). ``--json`` prints one JSON object on
stdout; progress bars (labelled) and per-epoch lines go to stderr then.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sglang_stop.errors import UserError, warn

if TYPE_CHECKING:
    from sglang_stop.tasks import Task

POSITIVE = click.IntRange(min=1)


def _load_model(path: str | None, threads: int) -> tuple[Any, Any]:
    """The runtime's loader (None = the embedded default), fp32 on CPU, with ``threads`` torch threads."""
    import torch

    from sglang_stop.models import load_model

    torch.set_num_threads(threads)
    return load_model(path, device="cpu", dtype="float32")


def _read_problems_jsonl(path: str) -> list[dict]:
    """The rows of a problems file, read as the JSONL task reads its own (one reader: validated rows,
    ``file:line`` errors, duplicate ids refused; a missing id is ``FILE/i``, numbers become strings)."""
    from sglang_stop.tasks import JsonlTask

    if not Path(path).is_file():
        raise UserError(f"--problems-jsonl: {path}: file not found")
    task = JsonlTask(path)
    return [{**p.metadata, "id": p.id, "question": p.question, "answer": p.answer} for p in task.problems(sys.maxsize)]


def _problems(task: Task, problems_jsonl: str | None, n: int, seed: int, split: str | None) -> list[dict]:
    """Problems as ``{id, question, answer, problem}`` dicts (``problem``: the task's ``Problem``, which
    its scoring takes); a task with splits (the testbed) draws from ``split``."""
    from sglang_stop.tasks import Problem

    if problems_jsonl:
        rows = _read_problems_jsonl(problems_jsonl)[:n]
        return [
            {**r, "problem": Problem(id=str(r["id"]), question=r["question"], answer=str(r["answer"]), source=task.spec)}
            for r in rows
        ]
    probs = task.split_problems(split, n, seed) if split is not None else task.problems(n, seed)
    return [{"id": p.id, "question": p.question, "answer": p.answer, "problem": p} for p in probs]


@contextmanager
def _bar(desc: str, unit: str) -> Iterator[Callable[[int, int], None]]:
    """A labelled tqdm bar on stderr, driven by ``progress(done, total)`` callbacks."""
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()


def _finite(v: Any) -> Any:
    """NaN/inf (an AUC with one class only) as null: the output must be valid JSON."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    return v


def _emit(as_json: bool, obj: dict[str, Any], human: str) -> None:
    click.echo(json.dumps(_finite(obj), allow_nan=False) if as_json else human)


@click.command("label")
@click.option("--model", "model_dir", default=None,
              help="HF model dir (default: the testbed model for --task testbed, else the embedded SmolLM2)")
@click.option("--task", default="testbed", show_default=True, help="any `sglang-stop run --task` spec")
@click.option("--problems-jsonl", default=None, help="problems {id, question, answer}, scored as --task")
@click.option("--split", type=click.Choice(["label", "eval"]), default=None,
              help="split of a task that has them (testbed, reasoner): label (STOP training; the default) or eval")
@click.option("--problems", "n", type=POSITIVE, default=500, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("-P", "--prefixes", type=POSITIVE, default=8, show_default=True)
@click.option("-K", "--continuations", type=POSITIVE, default=16, show_default=True)
@click.option("--prefix-len", type=POSITIVE, default=16, show_default=True, help="prune point in generated tokens")
@click.option("--max-new-tokens", type=click.IntRange(min=2), default=64, show_default=True)
@click.option("--temperature", type=click.FloatRange(min=0.0), default=1.0, show_default=True, help="0: greedy")
@click.option("--top-p", type=click.FloatRange(min=0.0, max=1.0, min_open=True), default=1.0, show_default=True)
@click.option("--top-k", type=click.IntRange(min=-1), default=-1, show_default=True, help="-1: off")
@click.option("--batch-size", type=POSITIVE, default=512, show_default=True, help="sampler rows per generate call")
@click.option("--problems-per-batch", type=POSITIVE, default=32, show_default=True,
              help="problems whose P*K continuations are sampled together")
@click.option("--threads", type=POSITIVE, default=1, show_default=True)
@click.option("--server", "servers", multiple=True, metavar="URL",
              help="sample on this SGLang server instead of in process (repeat for several; problems are pinned)")
@click.option("--router", default=None, metavar="URL", help="sample through this sglang-router (its workers)")
@click.option("--out", required=True, help="label JSONL (appended; existing pairs are skipped)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
def label_cmd(model_dir: str | None, task: str, problems_jsonl: str | None, split: str | None, n: int, seed: int,
              prefixes: int, continuations: int, prefix_len: int, max_new_tokens: int, temperature: float,
              top_p: float, top_k: int, batch_size: int, problems_per_batch: int, threads: int,
              servers: tuple[str, ...], router: str | None, out: str, as_json: bool) -> None:
    """Monte Carlo labels: P prefixes x K continuations per problem -> s_mc records.

    Prompts are formatted and answers checked exactly as `sglang-stop run` does for the task
    (chat template, reasoning-gym's own scoring), so the prefixes are the runtime's prefixes.
    Resuming onto a file made with other settings (K, P, prefix length, sampling, task, model) is refused.
    """
    from sglang_stop.config import RuntimeConfig
    from sglang_stop.backends.fleet import Fleet
    from sglang_stop.io import open_records
    from sglang_stop.models import model_identity
    from sglang_stop.runner import format_prompt
    from sglang_stop.tasks import load_task
    from sglang_stop.training.hf_sampler import HFSampler
    from sglang_stop.training.labels import LabelJob, label_header, label_problems, load_labels

    if top_k == 0:
        raise UserError("--top-k: 0 keeps no token; use -1 (off) or a count >= 1")
    job = LabelJob(prefixes=prefixes, continuations=continuations, prefix_len=prefix_len,
                   max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                   seed=seed, problems_per_batch=problems_per_batch)
    fleet = Fleet.from_options(servers, router)
    if fleet is not None:
        for flag, ignored in (("--model", model_dir is not None), ("--threads", threads != 1),
                              ("--batch-size", batch_size != 512)):
            if ignored:
                warn(f"{flag} is ignored with --server/--router (the server runs its own model and batching)")
    the_task = load_task(task)  # also scores --problems-jsonl rows
    testbed_split = bool(the_task.splits) and not problems_jsonl
    if split is not None and not testbed_split:
        warn(f"--split {split}: ignored (it picks the testbed task's problems; "
              f"{'--problems-jsonl gives them' if problems_jsonl else f'task is {the_task.spec!r}'})")
    if testbed_split:
        split = split or ("label" if "label" in the_task.splits else the_task.splits[0])
    else:
        split = None
    settings = {"task": the_task.spec, "split": split,
                "problems_jsonl": str(Path(problems_jsonl).resolve()) if problems_jsonl else None}
    probs = _problems(the_task, problems_jsonl, n, seed, split)
    out_p = Path(out)
    if out_p.is_dir():
        raise UserError(f"--out: {out_p}: is a directory, expected a label JSONL file path")
    if out_p.is_file() and out_p.stat().st_size > 0:  # resuming: settings checked now, the model once loaded
        from sglang_stop.io import read_header

        old = read_header(out_p)
        open_records(out_p, label_header(job, old.model if old else None, **settings)).close()
    default_dir = the_task.default_model()
    sampler: Any
    if fleet is not None:
        from sglang_stop.training.server_sampler import ServerSampler

        sampler = ServerSampler(fleet)
        tok, ident = sampler.tokenizer, sampler.identity()
    else:
        model, tok = _load_model(model_dir or default_dir, threads)
        sampler, ident = HFSampler(model, tok.eos_token_id, tok.pad_token_id, batch_size=batch_size), model_identity(model)
    header = label_header(job, ident, **settings)
    cfg = RuntimeConfig()

    def encode(q: str) -> list[int]:  # what LocalBackend feeds the model for a fresh prompt
        return list(tok(format_prompt(the_task, cfg, tok, q), add_special_tokens=True)["input_ids"])

    try:
        with _bar("label problems", "problem") as progress:
            written = label_problems(
                probs, out_p, job, sampler,
                encode_prompt=encode,
                decode=lambda ids: tok.decode(ids, skip_special_tokens=True),
                check=lambda p, text: the_task.check(p["problem"], text),
                progress=progress,
                header=header,
            )
    finally:
        if fleet is not None:
            sampler.shutdown()
    total = len(load_labels(out_p))
    res: dict[str, Any] = {"out": str(out_p), "written": written, "records": total, "problems": len(probs)}
    human = f"wrote {written} records to {out_p} ({total} in the file, {len(probs)} problems)"
    if fleet is not None:  # how much of each continuation's input (prompt + prefix) the server had cached
        st = sampler.stats
        res["cache"] = {**st.model_dump(), "fraction": st.fraction}
        human += f"; cached {st.cached_tokens}/{st.input_tokens} input tokens ({st.fraction:.1%})"
    _emit(as_json, res, human)


@click.command("train")
@click.option("--model", "model_dir", default=None, help="HF base model dir (default: the embedded testbed model)")
@click.option("--labels", required=True, multiple=True, help="label JSONL file(s)")
@click.option("--out", required=True, help="checkpoint directory (written atomically)")
@click.option("--k", "num_assess_tokens", type=POSITIVE, default=4, show_default=True, help="[STOP] tokens")
@click.option("--lora-r", type=POSITIVE, default=16, show_default=True)
@click.option("--lora-alpha", type=click.FloatRange(min=0.0, min_open=True), default=32.0, show_default=True)
@click.option("--epochs", type=POSITIVE, default=10, show_default=True)
@click.option("--batch-size", type=POSITIVE, default=32, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0.0, min_open=True), default=1e-3, show_default=True)
@click.option("--weight-decay", type=click.FloatRange(min=0.0), default=0.0, show_default=True)
@click.option("--lora-dropout", type=click.FloatRange(min=0.0, max=1.0, max_open=True), default=0.05,
              show_default=True)
@click.option("--val-fraction", type=click.FloatRange(min=0.0, max=1.0, min_open=True, max_open=True), default=0.2,
              show_default=True)
@click.option("--select", type=click.Choice(["mse", "within_auc"]), default="mse", show_default=True)
@click.option("--hard-labels", is_flag=True, help="ablation: s_mc >= 0.5 one-hot targets")
@click.option("--no-adapter", is_flag=True, help="ablation: linear probe on the base's last hidden state")
@click.option("--rank-weight", type=click.FloatRange(min=0.0), default=0.0, show_default=True,
              help="add a pairwise loss among each problem's prefixes, this weighted (batches hold whole problems)")
@click.option("--prefix-len", type=POSITIVE, default=None,
              help="prune later than the labels do: whole-path labels (-K 1) re-cut at this many generated tokens "
                   "(paths ended by then are dropped), as `bench signals --prefix-len` does")
@click.option("--seed", default=0, show_default=True)
@click.option("--threads", type=POSITIVE, default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout (epoch lines go to stderr)")
def train_cmd(model_dir: str | None, labels: tuple[str, ...], out: str, num_assess_tokens: int, lora_r: int,
              lora_alpha: float, epochs: int, batch_size: int, lr: float, weight_decay: float, lora_dropout: float,
              val_fraction: float, select: str, hard_labels: bool, no_adapter: bool, rank_weight: float,
              prefix_len: int | None, seed: int, threads: int, as_json: bool) -> None:
    """Train a STOP checkpoint (keeps the best validation epoch)."""
    from sglang_stop.io import read_header
    from sglang_stop.models import model_identity
    from sglang_stop.testbed import asset_dir
    from sglang_stop.training.labels import load_labels, recut
    from sglang_stop.training.train import TrainConfig, checked_split, train_stop

    out_p = Path(out)
    if out_p.exists() and not out_p.is_dir():
        raise UserError(f"--out: {out_p}: exists and is not a directory")
    if out_p.is_dir() and any(out_p.iterdir()) and not (out_p / "assess_token_config.json").is_file():
        raise UserError(f"--out: {out_p}: a non-empty directory that is not a STOP checkpoint; it would be replaced, "
                        "choose another path")
    records = [r for f in labels for r in load_labels(f)]
    if prefix_len is not None:  # refused now if a record is no whole path; the text is decoded after the model loads
        records = recut(records, prefix_len, lambda ids: "")
        if not records:
            raise UserError(f"--prefix-len {prefix_len}: every path of {', '.join(labels)} ended by then")
    checked_split(records, val_fraction)
    if no_adapter and (lora_r, lora_alpha, lora_dropout) != (16, 32.0, 0.05):
        warn("--lora-r/--lora-alpha/--lora-dropout: ignored with --no-adapter (no LoRA is trained)")
    cfg = TrainConfig(num_assess_tokens=num_assess_tokens, lora_r=lora_r, lora_alpha=lora_alpha, epochs=epochs,
                      batch_size=batch_size, lr=lr, weight_decay=weight_decay, lora_dropout=lora_dropout,
                      val_fraction=val_fraction, select=select,
                      hard_labels=hard_labels, no_adapter=no_adapter, rank_weight=rank_weight, seed=seed)
    model, tok = _load_model(model_dir or str(asset_dir()), threads)
    if prefix_len is not None:
        records = [r.model_copy(update={"prefix_text": tok.decode(r.token_ids[r.prompt_len:])}) for r in records]
    ident = model_identity(model)
    for f in labels:
        h = read_header(f)
        if h is not None and h.model.get("weights_hash") not in (None, ident["weights_hash"]):
            raise UserError(f"{f}: labelled on model {json.dumps(h.model)}, the base to train on is {json.dumps(ident)}; "
                            "STOP reads the base's own prefix KV, so label with this base")

    def log(row: dict[str, Any]) -> None:
        line = f"epoch {row['epoch']}: " + " ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items() if k != "epoch"
        )
        click.echo(line, err=as_json)

    best = train_stop(model, records, cfg, out_p, tokenizer=tok, pad_id=tok.pad_token_id or 0, log=log, progress=True)
    _emit(as_json, {"out": str(out_p), "records": len(records), "best": best},
          f"wrote {out_p}: best epoch {best['epoch']}: "
          + json.dumps({k: v for k, v in best.items() if k != "epoch"}))


@click.command("train-verifier")
@click.option("--labels", required=True, multiple=True, help="label JSONL file(s), as `sglang-stop label` writes them")
@click.option("--out", required=True,
              help="checkpoint directory (written atomically at each best epoch; OUT.work holds the resume state: a "
                   "rerun continues after the last finished epoch)")
@click.option("--base", default="testbed", show_default=True,
              help="the model the verifier copies: a HF model dir, a model name (smollm2-reasoner), or 'testbed' "
                   "(the committed testbed model)")
@click.option("--epochs", type=POSITIVE, default=3, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0.0, min_open=True), default=1e-3, show_default=True)
@click.option("--lora-r", type=POSITIVE, default=8, show_default=True)
@click.option("--batch-size", type=POSITIVE, default=32, show_default=True)
@click.option("--val-fraction", type=click.FloatRange(min=0.0, max=1.0, min_open=True, max_open=True), default=0.2,
              show_default=True)
@click.option("--max-records", type=POSITIVE, default=None, help="train on the first this many records")
@click.option("--seed", default=0, show_default=True)
@click.option("--threads", type=POSITIVE, default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout (epoch lines go to stderr)")
def train_verifier_cmd(labels: tuple[str, ...], out: str, base: str, epochs: int, lr: float, lora_r: int,
                       batch_size: int, val_fraction: float, max_records: int | None, seed: int, threads: int,
                       as_json: bool) -> None:
    """Train a Type II verifier (the `verifier` scorer: re-encodes each prefix with its own model copy)."""
    import torch

    from sglang_stop.scorers.verifier import check_base
    from sglang_stop.training.labels import load_labels
    from sglang_stop.training.verifier import train_verifier

    check_base(base)
    out_p = Path(out)
    if out_p.exists() and not out_p.is_dir():
        raise UserError(f"--out: {out_p}: exists and is not a directory")
    records = [r for f in labels for r in load_labels(f)][:max_records]
    torch.set_num_threads(threads)
    best = train_verifier(records, base, out_p, epochs=epochs, lr=lr, lora_r=lora_r, batch_size=batch_size,
                          val_fraction=val_fraction, seed=seed, log=lambda line: click.echo(line, err=as_json),
                          progress=True)
    _emit(as_json, {"out": str(out_p), "records": len(records), "best": best},
          f"wrote {out_p}: best epoch {best['epoch']}: val loss {best['val_loss']:.4f}")


@click.command("train-reasoner")
@click.option("--out", required=True, help="adapter directory (peft layout, bf16; written atomically at the end)")
@click.option("--work", default=None, help="resume state and loss log (default: OUT.work); a rerun resumes there")
@click.option("--steps", type=POSITIVE, default=130, show_default=True, help="130 built the committed adapter")
@click.option("--train-problems", type=POSITIVE, default=4000, show_default=True)
@click.option("--batch-size", type=POSITIVE, default=16, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0.0, min_open=True), default=1e-3, show_default=True)
@click.option("--lora-r", type=POSITIVE, default=8, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--threads", type=POSITIVE, default=2, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
def train_reasoner_cmd(out: str, work: str | None, steps: int, train_problems: int, batch_size: int, lr: float,
                       lora_r: int, seed: int, threads: int, as_json: bool) -> None:
    """Fine-tune the embedded SmolLM2-135M-Instruct into the `smollm2-reasoner` (LoRA on the `reasoner`
    task's written solutions, its train split; docs/reasoner.md)."""
    from sglang_stop.config import RuntimeConfig
    from sglang_stop.runner import format_prompt
    from sglang_stop.tasks.reasoner import ReasonerTask, examples
    from sglang_stop.training.reasoner import ReasonerRecipe, encode_examples, train_reasoner

    out_p = Path(out)
    if out_p.exists() and not out_p.is_dir():
        raise UserError(f"--out: {out_p}: exists and is not a directory")
    recipe = ReasonerRecipe(train_problems=train_problems, steps=steps, batch_size=batch_size, lr=lr,
                            lora_r=lora_r, lora_alpha=2.0 * lora_r, seed=seed)
    model, tok = _load_model(None, threads)
    task, cfg = ReasonerTask(), RuntimeConfig()
    pairs = [(p.question, sol) for p, sol in examples("train", recipe.train_problems)]
    rows = encode_examples(
        pairs,
        encode_prompt=lambda q: list(tok(format_prompt(task, cfg, tok, q), add_special_tokens=True)["input_ids"]),
        encode_text=lambda t: list(tok(t, add_special_tokens=False)["input_ids"]),
        eos_id=tok.eos_token_id,
    )
    res = train_reasoner(model, rows, recipe, Path(work) if work else out_p.with_name(out_p.name + ".work"), out_p,
                         pad_id=tok.pad_token_id or 0)
    _emit(as_json, {**res, "examples": len(rows)},
          f"wrote {out_p}: {res['steps']} steps on {len(rows)} examples, final loss {res['final_loss']:.4f}")


@click.group()
def main() -> None:
    """STOP scorer training (standalone group; also wired into `sglang-stop`)."""


main.add_command(label_cmd)
main.add_command(train_cmd)
main.add_command(train_verifier_cmd)
main.add_command(train_reasoner_cmd)

if __name__ == "__main__":
    from sglang_stop.cli_errors import run_cli_group

    run_cli_group(main)
