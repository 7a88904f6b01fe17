"""Train the testbed model from scratch: ``python -m sglang_stop.testbed.train --out DIR``.

The committed model was built in three runs (its ``train_log.json`` lists them): 4 layers trained on
careful and sloppy writers (``--sloppy-fraction``, ``data.written_solution``), then ``--grow-to 8`` and
more training with abstaining writers. The extra layers are what let it compute "has the text gone
wrong?" in its state, which STOP reads; docs/stop-scorer.md has the trials that led there.
"""

from __future__ import annotations

import copy
import json
import random
import time
from pathlib import Path

import click
import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

from sglang_stop.testbed.data import extract_answer, make_problems, random_question, split_of, written_solution
from sglang_stop.testbed.tokenizer import build_tokenizer
from sglang_stop.training.hf_sampler import HFSampler, SampleParams


def build_model(vocab_size: int, bos: int, eos: int, pad: int, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    # 4 layers (grow_layers appends more: the committed testbed has 8), 128 wide, a 128-token context
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                      tie_word_embeddings=True, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)
    return LlamaForCausalLM(cfg)


def grow_layers(model: LlamaForCausalLM, num_layers: int) -> LlamaForCausalLM:
    """Append copies of the last decoder layer until there are ``num_layers``, each a no-op at first.

    A 4-layer base forms its next-token prediction in its last layers, so no layer is left in which a
    later position could compare the token it sees with the prediction made one position earlier (the
    check "this step went wrong"). New layers on top give it that room. Their attention and MLP output
    projections start at zero, so the grown model computes exactly what the old one did and training
    continues from there instead of from scratch.
    """
    layers = model.model.layers
    if num_layers < len(layers):
        raise ValueError(f"--grow-to {num_layers} is below the model's {len(layers)} layers")
    while len(layers) < num_layers:
        new = copy.deepcopy(layers[-1])
        new.self_attn.layer_idx = len(layers)
        torch.nn.init.zeros_(new.self_attn.o_proj.weight)
        torch.nn.init.zeros_(new.mlp.down_proj.weight)
        layers.append(new)
    model.config.num_hidden_layers = num_layers
    if types := getattr(model.config, "layer_types", None):
        model.config.layer_types = list(types) + [types[-1]] * (num_layers - len(types))
    return model


def make_batch(
    rng: random.Random, tok, batch: int, sloppy_fraction: float = 0.0, error_rate: float = 0.0,
    abstain_rate: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask, and labels (loss on the completion + EOS only).

    A ``sloppy_fraction`` of the chains come from a sloppy writer (see ``written_solution``).
    """
    rows: list[list[int]] = []
    starts: list[int] = []
    while len(rows) < batch:
        q = random_question(rng)
        if split_of(q) != "train":
            continue
        q_ids = tok(q)["input_ids"]
        # No draw when there are no sloppy writers: the session-1 model's recipe keeps its stream.
        sloppy = sloppy_fraction > 0 and rng.random() < sloppy_fraction
        text = written_solution(q, rng, sloppy, error_rate, abstain_rate)
        s_ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        rows.append(q_ids + s_ids)
        starts.append(len(q_ids))
    width = max(len(r) for r in rows)
    ids = torch.full((batch, width), tok.pad_token_id)
    mask = torch.zeros((batch, width), dtype=torch.long)
    labels = torch.full((batch, width), -100)
    for i, (r, st) in enumerate(zip(rows, starts)):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
        labels[i, st : len(r)] = torch.tensor(r[st:])
    return ids, mask, labels


def accuracy(model, tok, problems: list[dict], samples: int = 1, seed: int = 0, temperature: float = 1.0) -> float:
    model.eval()
    sampler = HFSampler(model, tok.eos_token_id, tok.pad_token_id)
    prompts = [tok(p["question"])["input_ids"] for p in problems for _ in range(samples)]
    gens = sampler(prompts, SampleParams(temperature=temperature, max_new_tokens=64), seed)
    answers = [p["answer"] for p in problems for _ in range(samples)]
    ok = sum(extract_answer(tok.decode(g)) == a for g, a in zip(gens, answers))
    model.train()
    return ok / len(prompts)


@click.command()
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="HF model directory to write")
@click.option("--seed", default=0, show_default=True)
@click.option("--max-steps", default=3000, show_default=True)
@click.option("--max-seconds", default=300.0, show_default=True)
@click.option("--target-acc", default=0.5, show_default=True, help="stop once held-out per-sample accuracy reaches this")
@click.option("--eval-every", default=50, show_default=True)
@click.option("--eval-temperature", default=1.0, show_default=True, help="sampling temperature of the accuracy check")
@click.option("--init", "init_dir", default=None, help="continue training this HF model dir instead of a fresh model")
@click.option("--grow-to", default=None, type=int,
              help="with --init: append no-op layers up to this many (room for a self-check; see grow_layers)")
@click.option("--sloppy-fraction", default=0.0, show_default=True,
              help="share of training chains by a sloppy writer (the committed model: 0.5)")
@click.option("--error-rate", default=0.35, show_default=True, help="a sloppy writer's chance to get a result wrong")
@click.option("--abstain-rate", default=0.0, show_default=True,
              help="chance that a writer who slipped ends with a bare 'A' (no answer)")
@click.option("--batch-size", default=64, show_default=True)
@click.option("--lr", default=2e-3, show_default=True)
@click.option("--threads", default=1, show_default=True)
def main(out_dir: str, seed: int, max_steps: int, max_seconds: float, target_acc: float, eval_every: int,
         eval_temperature: float, init_dir: str | None, grow_to: int | None, sloppy_fraction: float, error_rate: float, abstain_rate: float, batch_size: int,
         lr: float, threads: int) -> None:
    torch.set_num_threads(threads)
    if grow_to and not init_dir:
        raise click.UsageError("--grow-to needs --init (the trained model to grow)")
    tok = build_tokenizer()
    if init_dir:
        model = LlamaForCausalLM.from_pretrained(init_dir, dtype=torch.float32)
        if grow_to:
            try:
                grow_layers(model, grow_to)
            except ValueError as e:
                raise click.BadParameter(str(e), param_hint="--grow-to") from None
        torch.manual_seed(seed)
    else:
        model = build_model(len(tok), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    rng = random.Random(seed)
    # Accuracy is checked on eval-split questions (never trained on); seed 10_000+ keeps them
    # apart from the seeds benchmarks use.
    dev_problems = make_problems(200, seed=10_000 + seed)
    log, t0, acc = [], time.time(), 0.0
    model.train()
    for step in range(1, max_steps + 1):
        ids, mask, labels = make_batch(rng, tok, batch_size, sloppy_fraction, error_rate, abstain_rate)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % eval_every == 0:
            acc = accuracy(model, tok, dev_problems, seed=step, temperature=eval_temperature)
            log.append({"step": step, "loss": round(loss.item(), 4), "acc": acc, "seconds": round(time.time() - t0, 1)})
            print(json.dumps(log[-1]), flush=True)
            if acc >= target_acc or time.time() - t0 > max_seconds:
                break
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        do_sample=True, temperature=1.0, max_new_tokens=64,
    )
    out = Path(out_dir)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    (out / "train_log.json").write_text(json.dumps({"seed": seed, "target_acc": target_acc, "eval_temperature": eval_temperature,
                                                  "init": init_dir, "grow_to": grow_to, "sloppy_fraction": sloppy_fraction, "error_rate": error_rate,
                                                  "abstain_rate": abstain_rate,
                                                  "batch_size": batch_size, "lr": lr, "log": log}, indent=1) + "\n")
    print(f"saved {out} after {step} steps, {time.time() - t0:.0f}s, held-out per-sample accuracy {acc:.2f}")


if __name__ == "__main__":
    main()
