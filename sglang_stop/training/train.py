"""Train a STOP checkpoint on Monte Carlo label records.

Loss: cross-entropy against the soft label (1 - s_mc, s_mc) (``hard_labels``: s_mc >= 0.5 one-hot), plus
optionally (``rank_weight``) a pairwise loss among each problem's prefixes: pooled targets mostly teach
which problems are hard, while pruning needs which of one problem's paths slipped.
A batch runs the frozen base over the prefixes once (no grad) and then the k [STOP] tokens with
LoRA (grad): the same :class:`StopNet` path the scorer uses at inference. Validation is a split BY
PROBLEM; the checkpoint with the best validation MSE (the authors' rule) is kept.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from tqdm import tqdm

from sglang_stop.backends.base import PrefixKV
from sglang_stop.errors import UserError
from sglang_stop.kvcache import Past, cache_from_past, past_of
from sglang_stop.scorers.stop import DEFAULT_TARGETS, StopNet, StopNetConfig, decoder_of, save_checkpoint
from sglang_stop.training.labels import LabelRecord
from sglang_stop.training.metrics import auc, kept_accuracy, within_problem_auc


class TrainConfig(BaseModel):
    num_assess_tokens: int = Field(4, ge=1)
    no_adapter: bool = Field(False, description="linear-probe ablation: head on the base's last hidden state")
    hard_labels: bool = Field(False, description="ablation: train on s_mc >= 0.5 instead of s_mc")
    rank_weight: float = Field(0.0, ge=0.0, description="weight of the within-problem pairwise loss; > 0 packs "
                               "whole problems into each batch so that a batch has pairs to rank")
    lora_r: int = Field(16, ge=1)
    lora_alpha: float = 32.0
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(default_factory=lambda: list(DEFAULT_TARGETS))
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = 0.0
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    select: Literal["mse", "within_auc"] = Field(
        "mse", description="which validation figure picks the best epoch (within_auc ties are broken by mse)")
    cache_prefix_kv: bool = Field(True, description="encode each training prefix once for all epochs (base is frozen)")
    seed: int = 0


def split_by_problem(records: Sequence[LabelRecord], val_fraction: float) -> tuple[list[LabelRecord], list[LabelRecord]]:
    """Hash of the problem id decides: no problem has prefixes on both sides."""

    def is_val(pid: str) -> bool:
        return int(hashlib.sha256(pid.encode()).hexdigest()[:8], 16) % 10_000 < val_fraction * 10_000

    train = [r for r in records if not is_val(r.problem_id)]
    val = [r for r in records if is_val(r.problem_id)]
    return train, val


def checked_split(records: Sequence[LabelRecord], val_fraction: float) -> tuple[list[LabelRecord], list[LabelRecord]]:
    """:func:`split_by_problem`, refusing a split with an empty side (checked before the model loads)."""
    train, val = split_by_problem(records, val_fraction)
    if not train or not val:
        raise UserError(f"--labels: {len(records)} records give {len(train)} train / {len(val)} validation "
                        f"(split by problem, --val-fraction {val_fraction}); need both")
    return train, val


def _targets(batch: Sequence[LabelRecord], hard: bool, device: Any) -> torch.Tensor:
    s = torch.tensor([float(r.s_mc >= 0.5) if hard else r.s_mc for r in batch], device=device)
    return torch.stack([1 - s, s], dim=1)


def problem_batches(records: Sequence[LabelRecord], batch_size: int, rng: random.Random) -> list[list[LabelRecord]]:
    """Shuffled whole problems packed up to ``batch_size`` records a batch (a bigger problem is a batch alone)."""
    by_problem: dict[str, list[LabelRecord]] = {}
    for r in records:
        by_problem.setdefault(r.problem_id, []).append(r)
    groups = list(by_problem.values())
    rng.shuffle(groups)
    batches: list[list[LabelRecord]] = []
    for g in groups:
        if batches and len(batches[-1]) + len(g) <= batch_size:
            batches[-1].extend(g)
        else:
            batches.append(list(g))
    return batches


def within_rank_loss(margin: torch.Tensor, s: torch.Tensor, problem_ids: Sequence[str]) -> torch.Tensor:
    """-log sigmoid(m_i - m_j) over pairs of one problem with s_i > s_j, weighted by s_i - s_j (a RankNet
    loss on the log-odds ``margin``); 0 when the batch has no such pair."""
    index = {pid: i for i, pid in enumerate(dict.fromkeys(problem_ids))}
    g = torch.tensor([index[pid] for pid in problem_ids], device=margin.device)
    w = (s[:, None] - s[None, :]).clamp(min=0) * (g[:, None] == g[None, :])
    if not bool(w.any()):
        return margin.sum() * 0.0
    return (w * F.softplus(margin[None, :] - margin[:, None])).sum() / w.sum()


@torch.no_grad()
def predict(net: StopNet, model: Any, records: Sequence[LabelRecord], batch_size: int = 64, pad_id: int = 0) -> list[float]:
    net.eval()
    out: list[float] = []
    for s in range(0, len(records), batch_size):
        logits = net.logits_from_ids(model, [r.token_ids for r in records[s : s + batch_size]], pad_id)
        out.extend(torch.softmax(logits.float(), -1)[:, 1].tolist())
    return out


class PromptSharedKV:
    """The training prefixes' KV, each prompt encoded and stored once: a problem's P prefixes share it
    (the reasoner's labels: 86 prompt + 24 generated tokens, so 2.4x less memory than a whole copy per
    prefix, which filled 24 GB at 2 000 records). :meth:`add_many` encodes the same-length suffixes of one
    prompt in one batch (a problem's 16 whole paths cut at one prune point: one forward, not 16).
    :meth:`get` joins prompt and suffix into the per-branch ``PrefixKV`` that inference reads; ``last``
    holds each prefix's final hidden state at its last token, what the no-adapter probe reads
    (``keep_kv=False`` keeps only that)."""

    def __init__(self, model: Any, keep_kv: bool = True) -> None:
        self.decoder, self.device = decoder_of(model), next(model.parameters()).device
        self.keep_kv = keep_kv
        self.prompts: dict[tuple[int, ...], Past] = {}
        self.rows: dict[int, tuple[tuple[int, ...], Past]] = {}
        self.last: dict[int, torch.Tensor] = {}

    def add(self, r: LabelRecord) -> None:
        self.add_many([r])

    @torch.no_grad()
    def add_many(self, records: Sequence[LabelRecord]) -> None:
        groups: dict[tuple[tuple[int, ...], int], list[LabelRecord]] = {}
        for r in records:
            head, tail = self._split(r)
            groups.setdefault((head, len(tail)), []).append(r)
        for (head, _), rs in groups.items():
            if head and head not in self.prompts:
                self.prompts[head] = self._encode([list(head)], None)[0]
            prompt = self.prompts[head] if head else None
            past, hidden = self._encode([list(self._split(r)[1]) for r in rs], prompt)
            n = len(head)
            for i, r in enumerate(rs):
                self.last[id(r)] = hidden[i, -1].float().clone()
                if self.keep_kv:
                    self.rows[id(r)] = (head, tuple((k[i : i + 1, :, n:].clone(), v[i : i + 1, :, n:].clone())
                                                    for k, v in past))

    @staticmethod
    def _split(r: LabelRecord) -> tuple[tuple[int, ...], list[int]]:
        ids = list(r.token_ids)
        split = r.prompt_len if 0 < r.prompt_len < len(ids) else 0
        return tuple(ids[:split]), ids[split:]

    def _encode(self, rows: list[list[int]], past: Past | None) -> tuple[Past, torch.Tensor]:
        cache = None
        if past is not None:  # joined by new tensors: past stays as it is
            cache = cache_from_past(tuple((k.expand(len(rows), -1, -1, -1), v.expand(len(rows), -1, -1, -1))
                                          for k, v in past))
        out = self.decoder(input_ids=torch.tensor(rows, device=self.device), past_key_values=cache, use_cache=True)
        return past_of(out.past_key_values), out.last_hidden_state

    def get(self, r: LabelRecord) -> PrefixKV:
        head, tail = self.rows[id(r)]
        if not head:
            return PrefixKV(token_ids=list(r.token_ids), past=tuple(tail))
        past = tuple((torch.cat([pk, k], 2), torch.cat([pv, v], 2)) for (pk, pv), (k, v) in zip(self.prompts[head], tail))
        return PrefixKV(token_ids=list(r.token_ids), past=past)


def encode_all(store: PromptSharedKV, records: Sequence[LabelRecord], desc: str, progress: bool) -> None:
    """Every record's prefix into ``store``, a problem at a time (its paths share a prompt)."""
    by_problem: dict[str, list[LabelRecord]] = {}
    for r in records:
        by_problem.setdefault(r.problem_id, []).append(r)
    with tqdm(total=len(records), desc=desc, unit="prefix", disable=not progress, file=sys.stderr) as bar:
        for rs in by_problem.values():
            store.add_many(rs)
            bar.update(len(rs))


def probe_features(model: Any, records: Sequence[LabelRecord], progress: bool = False) -> torch.Tensor:
    """The no-adapter ablation's input: the frozen base's final hidden state at each prefix's last token,
    ``[N, hidden]``. The base is frozen, so a linear probe trains on these once-computed features (what
    ``StopNet`` computes at inference, without a forward pass per epoch)."""
    store = PromptSharedKV(model, keep_kv=False)
    encode_all(store, records, "encode prefixes", progress)
    return torch.stack([store.last[id(r)] for r in records])


def evaluate(preds: Sequence[float], records: Sequence[LabelRecord]) -> dict[str, float]:
    s = [r.s_mc for r in records]
    good = [x >= 0.5 for x in s]
    groups = [r.problem_id for r in records]
    w_auc, n_mixed = within_problem_auc(groups, preds, good)
    return {
        "mse": sum((p - y) ** 2 for p, y in zip(preds, s)) / len(s),
        "auc": auc(preds, good),
        "within_auc": w_auc,
        "mixed_problems": n_mixed,
        "cls_acc": sum((p >= 0.5) == g for p, g in zip(preds, good)) / len(s),
        "kept_acc": kept_accuracy(groups, preds, s),  # mean s_mc of the top quarter per problem
        "base_acc": sum(s) / len(s),
    }


def selection_key(metrics: dict[str, float], select: str) -> tuple[float, ...]:
    """Lower is better. within_auc ties whenever few validation problems are mixed (2 mixed problems of
    26 gave 0.5 at every epoch, so the first epoch won): mse breaks the tie."""
    return (metrics["mse"],) if select == "mse" else (-metrics["within_auc"], metrics["mse"])


def _batch_scorer(net: StopNet, model: Any, records: Sequence[LabelRecord], cfg: TrainConfig, pad_id: int,
                  progress: bool, store: PromptSharedKV | None) -> Callable[[Sequence[LabelRecord]], torch.Tensor]:
    """``batch -> [B, 2]`` logits by the inference path, with what the frozen base gives computed once for
    every record (train and validation): the prefixes' KV (adapter), or the last hidden state that the
    linear probe reads (no adapter). ``store``: an encoding already made (several trainings on the same
    records share it). ``cache_prefix_kv=False`` re-encodes each batch instead."""
    if cfg.no_adapter:
        if store is not None and all(id(r) in store.last for r in records):
            feats = torch.stack([store.last[id(r)] for r in records])
        else:
            feats = probe_features(model, records, progress)
        row = {id(r): i for i, r in enumerate(records)}
        return lambda batch: net.head(feats[[row[id(r)] for r in batch]].to(net.head.weight.dtype))
    if not cfg.cache_prefix_kv:
        return lambda batch: net.logits_from_ids(model, [r.token_ids for r in batch], pad_id)
    if store is None or not store.keep_kv:
        store = PromptSharedKV(model)
    missing = [r for r in records if id(r) not in store.rows]
    if missing:
        encode_all(store, missing, "encode prefixes", progress)
    kv = store
    return lambda batch: net.logits_from_prefix_kvs(model, [kv.get(r) for r in batch])


def train_stop(
    model: Any,
    records: Sequence[LabelRecord],
    cfg: TrainConfig,
    out: str | Path,
    tokenizer: Any = None,
    log: Callable[[dict[str, Any]], None] = lambda d: print(json.dumps(d), flush=True),
    pad_id: int = 0,
    progress: bool = False,
    store: PromptSharedKV | None = None,
) -> dict[str, Any]:
    """Returns the best epoch's validation metrics; the checkpoint is written to ``out``.
    ``progress``: labelled tqdm bars on stderr (prefix encoding, each epoch's batches). ``store``: the
    records' prefix encoding to reuse (ablations on the same labels: encode once, train each variant)."""
    train, val = checked_split(records, cfg.val_fraction)
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()  # base stays in eval mode (no dropout): its prefix KV must match inference
    torch.manual_seed(cfg.seed)
    net_cfg = StopNetConfig(
        num_assess_tokens=cfg.num_assess_tokens,
        mode="no_adapter" if cfg.no_adapter else "adapter",
        lora_r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.target_modules,
    )
    dev = next(model.parameters()).device
    net = StopNet(net_cfg, model).to(dev)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = random.Random(cfg.seed)
    best: dict[str, Any] | None = None
    t0 = time.time()
    logits_of = _batch_scorer(net, model, [*train, *val], cfg, pad_id, progress, store)
    for epoch in range(1, cfg.epochs + 1):
        net.train()
        if cfg.rank_weight > 0:
            batches = problem_batches(train, cfg.batch_size, rng)
        else:
            order = list(train)
            rng.shuffle(order)
            batches = [order[s : s + cfg.batch_size] for s in range(0, len(order), cfg.batch_size)]
        total = 0.0
        for batch in tqdm(batches, desc=f"train epoch {epoch}/{cfg.epochs}", unit="batch", disable=not progress,
                          file=sys.stderr, leave=False):
            logits = logits_of(batch)
            targets = _targets(batch, cfg.hard_labels, dev)
            loss = F.cross_entropy(logits.float(), targets)
            if cfg.rank_weight > 0:
                margin = logits[:, 1].float() - logits[:, 0].float()
                loss = loss + cfg.rank_weight * within_rank_loss(margin, targets[:, 1], [r.problem_id for r in batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(batch)
        net.eval()
        with torch.no_grad():
            preds = [p for s in range(0, len(val), 64)
                     for p in torch.softmax(logits_of(val[s : s + 64]).float(), -1)[:, 1].tolist()]
        metrics = evaluate(preds, val)
        row = {"epoch": epoch, "train_loss": total / len(train), **metrics, "seconds": round(time.time() - t0, 1)}
        log(row)
        key = selection_key(metrics, cfg.select)
        if best is None or (not math.isnan(key[0]) and key < best["_key"]):
            best = {**row, "_key": key}
            save_checkpoint(
                out, net, model, tokenizer,
                training={
                    "config": cfg.model_dump(mode="json"),
                    "records": len(records), "train_records": len(train), "val_records": len(val),
                    "prefix_lens": sorted({r.prefix_len for r in records}),
                    "best": {k: v for k, v in row.items()},
                },
            )
    assert best is not None
    best.pop("_key")
    return best
