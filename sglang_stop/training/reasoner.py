"""Fine-tune SmolLM2-135M-Instruct into the step-by-step reasoner (``--model smollm2-reasoner``).

Supervised LoRA on the ``reasoner`` task's written solutions (:mod:`sglang_stop.tasks.reasoner`), with
the runtime's own prompt and chat template, loss on the answer tokens and the end token only. The point
is not a strong model but one whose mistakes are written down early (a wrong line dooms the answer), so
a prefix carries a signal a pruner can read; docs/reasoner.md has the recipe and the figures.

Resumable: every ``save_every`` steps the LoRA weights, optimizer state and step are written atomically
to ``work/state.pt``; a rerun with the same recipe picks up there. The adapter itself is written (in
bf16, a few MB) to ``out`` atomically at the end.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, Field

from sglang_stop.errors import UserError
from sglang_stop.io import JsonlAppender, atomic_dir, atomic_torch_save

BASE_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what the embedded GGUF is a quantization of
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class ReasonerRecipe(BaseModel):
    """Everything that decides the adapter; stored beside it (``recipe.json``) and in the resume state."""

    train_problems: int = Field(4000, ge=1, description="problems drawn from the task's train pool")
    steps: int = Field(130, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(10, ge=0)
    clip: float = Field(1.0, gt=0)
    lora_r: int = Field(8, ge=1)
    lora_alpha: float = Field(16.0, gt=0)
    target_modules: list[str] = Field(default_factory=lambda: list(TARGETS))
    seed: int = 0


def encode_examples(
    pairs: Sequence[tuple[str, str]], encode_prompt: Callable[[str], list[int]], encode_text: Callable[[str], list[int]],
    eos_id: int,
) -> list[tuple[list[int], int]]:
    """``(question, solution)`` -> ``(prompt ids + solution ids + eos, prompt length)``."""
    out = []
    for question, sol in pairs:
        prompt = encode_prompt(question)
        out.append((prompt + encode_text(sol) + [eos_id], len(prompt)))
    return out


def _batch(rows: Sequence[tuple[list[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (seq, plen) in enumerate(rows):
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
        labels[i, plen : len(seq)] = torch.tensor(seq[plen:])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _order(n: int, steps: int, batch: int, seed: int) -> list[list[int]]:
    """Batch index lists for every step (epochs reshuffled), fixed by the seed so a resume continues it."""
    rng = random.Random(seed)
    out: list[list[int]] = []
    perm: list[int] = []
    while len(out) < steps:
        if len(perm) < batch:
            fresh = list(range(n))
            rng.shuffle(fresh)
            perm += fresh
        out.append(perm[:batch])
        perm = perm[batch:]
    return out


def _loss(peft_model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy on the answer tokens, the LM head run on those positions only (the head is a
    49k-wide matmul; the prompt's ~100 positions per row would triple its cost and memory for nothing)."""
    core = peft_model.get_base_model()
    hidden = core.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    labels = batch["labels"][:, 1:]
    keep = labels != -100
    logits = core.lm_head(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), labels[keep])


def _trainable(model: Any) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.named_parameters() if v.requires_grad}


def train_reasoner(
    model: Any, examples: list[tuple[list[int], int]], recipe: ReasonerRecipe, work: Path, out: Path, pad_id: int,
    save_every: int = 10, progress: bool = True, log: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """LoRA-tune ``model`` (the base, in place) on ``examples``; returns the run's summary."""
    from peft import LoraConfig, get_peft_model
    from tqdm import tqdm

    torch.manual_seed(recipe.seed)
    peft_model = get_peft_model(model, LoraConfig(
        r=recipe.lora_r, lora_alpha=recipe.lora_alpha,  # type: ignore[arg-type]  # peft's stub says int; it scales by alpha/r lora_dropout=0.0, target_modules=list(recipe.target_modules),
        task_type="CAUSAL_LM",
    ))
    params = _trainable(peft_model)
    opt = torch.optim.AdamW(params.values(), lr=recipe.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, recipe.warmup_steps)))
    work.mkdir(parents=True, exist_ok=True)
    state_p, log_p = work / "state.pt", work / "log.jsonl"
    start = 0
    if state_p.is_file():
        state = torch.load(state_p, weights_only=False)
        if state.get("recipe") != recipe.model_dump():
            raise UserError(f"--work: {work} holds a run of another recipe; use another --work or delete it")
        peft_model.load_state_dict(state["lora"], strict=False)
        opt.load_state_dict(state["optim"])
        sched.load_state_dict(state["sched"])
        start = int(state["step"])
    order = _order(len(examples), recipe.steps, recipe.batch_size, recipe.seed)
    peft_model.train()
    log_f = JsonlAppender(log_p)
    bar = tqdm(total=recipe.steps, initial=start, desc="train reasoner", unit="step", file=sys.stderr,
               dynamic_ncols=True, disable=not progress)
    t0, tokens, loss_v = time.perf_counter(), 0, math.nan
    for step in range(start, recipe.steps):
        batch = _batch([examples[i] for i in order[step]], pad_id)
        loss = _loss(peft_model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), recipe.clip)
        opt.step()
        sched.step()
        loss_v, tokens = float(loss.detach()), tokens + int(batch["attention_mask"].sum())
        bar.update(1)
        bar.set_postfix(loss=f"{loss_v:.3f}")
        row = {"step": step + 1, "loss": round(loss_v, 5), "tokens_per_s": round(tokens / (time.perf_counter() - t0), 1)}
        log_f.append(row)
        if log is not None:
            log(row)
        if (step + 1) % save_every == 0 or step + 1 == recipe.steps:
            atomic_torch_save(state_p, {"recipe": recipe.model_dump(), "step": step + 1,
                                  "lora": {k: v.detach().clone() for k, v in params.items()},
                                  "optim": opt.state_dict(), "sched": sched.state_dict()})
    bar.close()
    log_f.close()
    peft_model.eval()
    save_adapter(peft_model, out, recipe)
    return {"steps": recipe.steps, "final_loss": loss_v, "out": str(out)}


def save_adapter(peft_model: Any, out: Path, recipe: ReasonerRecipe) -> None:
    """The LoRA adapter in bf16 (peft's layout) plus ``recipe.json``, replacing ``out`` atomically."""
    for p in _trainable(peft_model).values():
        p.data = p.data.to(torch.bfloat16)
    for cfg in peft_model.peft_config.values():  # the base's public name, not this machine's cache path
        cfg.base_model_name_or_path = BASE_NAME
    with atomic_dir(out) as tmp:
        peft_model.save_pretrained(str(tmp))
        (tmp / "README.md").unlink(missing_ok=True)  # peft's empty model card
        (tmp / "recipe.json").write_text(json.dumps(recipe.model_dump(), indent=2) + "\n")
