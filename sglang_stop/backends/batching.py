"""The in-process backend's decode batch: one gen's row (:class:`GenRequest`), the live padded KV batch
the scheduler steps all rows in, and the sampler that picks every row's next token at once.

Rows of different lengths decode together: each row's KV is left-padded to the batch's width and a
2-D attention mask marks the real tokens (as HF ``generate`` does for a padded batch). A branch's own
KV lives in its :class:`KVBranchState` between gens; the batch holds a copy while the row decodes.
"""

from __future__ import annotations

import queue
import re
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from sglang_stop.backends.branches import BranchState
from sglang_stop.backends.constrained import RowConstraint, apply_masks
from sglang_stop.kvcache import cache_from_past

if TYPE_CHECKING:
    from typing import Self  # 3.11+; annotations only (Python 3.10 is supported)

Past = tuple[tuple[torch.Tensor, torch.Tensor], ...]
TOP_LOGPROBS = 20  # per generated token, for confidence-style scorers


@dataclass
class KVBranchState(BranchState):
    """A branch with its KV. Invariant: ``past`` covers ``ids[:kv_len]``; later ids are pending. If
    ``next_logits`` is set, the KV covers all ids and the next token samples without a forward."""

    past: Past | None = None  # KV of ids[:kv_len]
    kv_len: int = 0
    next_logits: torch.Tensor | None = None  # [V] logits after ids[-1], if kv_len == len(ids)
    generator: torch.Generator | None = None

    def fork(self) -> Self:
        """A child sharing this state's KV tensors (safe: they are never written in place)."""
        child = super().fork()
        child.past, child.kv_len, child.next_logits = self.past, self.kv_len, self.next_logits
        return child


@dataclass
class GenRequest:
    """One ``gen`` call on one branch: its sampling parameters, what it sampled, and its caller's future."""

    state: KVBranchState
    max_new_tokens: int
    temperature: float
    top_p: float
    top_k: int
    stop: list[str]
    stop_token_ids: set[int]
    ignore_eos: bool
    future: Future
    min_new_tokens: int = 0
    min_p: float = 0.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    stop_regex: list[re.Pattern[str]] = field(default_factory=list)
    constraint: RowConstraint | None = None
    top_logprobs_num: int = 0  # > 0: record this many top (logprob, id) pairs per token for meta_info
    chunks: queue.Queue[int | None] | None = None  # streaming: len(new_ids) after each token, None at the end
    cached: int = 0  # KV length when the gen was submitted
    prompt_tokens: int = 0
    prefix_text: str = ""  # the executor's text when the gen was submitted
    final_text: str = ""
    new_ids: list[int] = field(default_factory=list)
    out_logprobs: list[tuple[float, int]] = field(default_factory=list)
    out_top: list[list[tuple[float, int]]] = field(default_factory=list)
    start_time: float = field(default_factory=time.perf_counter)


def kv_layers(cache: DynamicCache) -> list[DynamicLayer]:
    """The cache's layers as the full-attention ``DynamicLayer`` they are here (transformers types them
    as a union with linear-attention layers, which hold no keys/values)."""
    out: list[DynamicLayer] = []
    for layer in cache.layers:
        if not isinstance(layer, DynamicLayer) or layer.keys is None or layer.values is None:
            raise TypeError(f"batched decoding needs key/value cache layers, got {type(layer).__name__}")
        out.append(layer)
    return out


def layer_kv(layer: DynamicLayer) -> tuple[torch.Tensor, torch.Tensor]:
    """A layer's keys and values (set: see :func:`kv_layers`)."""
    assert layer.keys is not None and layer.values is not None
    return layer.keys, layer.values


class LiveBatch:
    """The rows decoding together: one padded KV cache, a 2-D attention mask, per-row lengths."""

    def __init__(self) -> None:
        self.rows: list[GenRequest] = []
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None  # [B, W] 1 = real token

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, reqs: list[GenRequest], device: torch.device) -> None:
        """Left-pad the newcomers' KV (and the batch, if they are longer) to one width and stack."""
        pasts = [_past(r.state) for r in reqs]
        old_w = 0 if self.mask is None else self.mask.shape[1]
        new_w = max([old_w] + [r.state.kv_len for r in reqs])
        n_layers = len(pasts[0])
        layers_k: list[list[torch.Tensor]] = [[] for _ in range(n_layers)]
        layers_v: list[list[torch.Tensor]] = [[] for _ in range(n_layers)]
        masks: list[torch.Tensor] = []
        if self.cache is not None and self.mask is not None:
            pad = new_w - old_w
            for li, layer in enumerate(kv_layers(self.cache)):
                k, v = layer_kv(layer)
                layers_k[li].append(left_pad(k, pad))
                layers_v[li].append(left_pad(v, pad))
            masks.append(torch.nn.functional.pad(self.mask, (pad, 0)))
        for r, past in zip(reqs, pasts):
            pad = new_w - r.state.kv_len
            for li in range(n_layers):
                layers_k[li].append(left_pad(past[li][0], pad))
                layers_v[li].append(left_pad(past[li][1], pad))
            m = torch.zeros(1, new_w, dtype=torch.long, device=device)
            m[0, pad:] = 1
            masks.append(m)
        self.cache = cache_from_past(
            [(torch.cat(layers_k[li]), torch.cat(layers_v[li])) for li in range(n_layers)]
        )
        self.mask = torch.cat(masks)
        self.rows.extend(reqs)

    def remove(self, drop: list[int]) -> None:
        """Drop finished rows, then trim leading columns that are padding in every remaining row."""
        keep = [i for i in range(len(self.rows)) if i not in set(drop)]
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.cache, self.mask = None, None
            return
        assert self.cache is not None and self.mask is not None
        idx = torch.tensor(keep, device=self.mask.device)
        mask = self.mask.index_select(0, idx)
        first = int(mask.any(0).nonzero()[0])
        self.mask = mask[:, first:]
        for layer in kv_layers(self.cache):
            k, v = layer_kv(layer)
            layer.keys = k.index_select(0, idx)[:, :, first:]
            layer.values = v.index_select(0, idx)[:, :, first:]

    def row_past(self, i: int) -> Past:
        """Row ``i``'s KV without its padding (what the branch keeps when its gen ends)."""
        assert self.cache is not None and self.mask is not None
        sel = self.mask[i].bool()
        return tuple(
            (k[i : i + 1, :, sel].contiguous(), v[i : i + 1, :, sel].contiguous())
            for k, v in map(layer_kv, kv_layers(self.cache))
        )


def _past(st: KVBranchState) -> Past:
    assert st.past is not None, "a row joins the batch with its prefix encoded"
    return st.past


def left_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    return x if pad == 0 else torch.nn.functional.pad(x, (0, 0, pad, 0))


def sample_rows(logits: torch.Tensor, rows: Sequence[GenRequest], eos_ids: set[int]) -> list[int]:
    """Per-row temperature/top-k/top-p sampling with each branch's own generator, under each
    row's grammar mask and ``min_new_tokens`` (stop tokens blocked until then).

    Also records, per row, the chosen token's logprob, the top-k logprobs and the entropy of the
    untempered, unmasked distribution: the inputs of confidence/entropy scorers.
    """
    logits = logits.float()
    logp = torch.log_softmax(logits, dim=-1)
    ent = -(logp.exp() * logp).sum(-1)
    top_lp = logp.topk(min(TOP_LOGPROBS, logp.shape[-1]), dim=-1).values
    masks = {i: r.constraint.mask() for i, r in enumerate(rows) if r.constraint is not None}
    early = [i for i, r in enumerate(rows) if r.constraint is None and len(r.new_ids) < r.min_new_tokens]
    penalised = [i for i, r in enumerate(rows) if (r.frequency_penalty or r.presence_penalty) and r.new_ids]
    if masks or early or penalised:
        logits = logits.clone()
        for i in penalised:  # as the server's penalizers: over this gen's output tokens
            r = rows[i]
            counts = torch.bincount(torch.tensor(r.new_ids), minlength=logits.shape[-1]).to(logits)
            logits[i] -= r.frequency_penalty * counts + r.presence_penalty * (counts > 0).to(logits)
        apply_masks(logits, masks)
        for i in early:
            logits[i, sorted(eos_ids | rows[i].stop_token_ids)] = float("-inf")
    out = pick_tokens(logits, rows)
    chosen = logp.gather(1, torch.tensor(out, device=logp.device)[:, None])[:, 0].tolist()
    for r, tok, lp, tops, h in zip(rows, out, chosen, top_lp.tolist(), ent.tolist()):
        st = r.state
        st.logprobs.append(lp)
        st.top_logprobs.append(tops)
        st.entropies.append(h)
        r.out_logprobs.append((lp, tok))
    for i, r in enumerate(rows):
        if r.top_logprobs_num > 0:
            k_top = logp[i].topk(min(r.top_logprobs_num, logp.shape[-1]))
            r.out_top.append(list(zip(k_top.values.tolist(), k_top.indices.tolist())))
    return out


def pick_tokens(logits: torch.Tensor, rows: Sequence[Any]) -> list[int]:
    """Greedy rows take the argmax; sampled rows draw by inverse CDF with one uniform from their own
    generator, all rows at once. Rows without top-k/top-p never sort the vocabulary (the per-row
    full sort was a third of a 16-branch decode step on SmolLM2's 49k vocabulary).

    ``rows``: anything with ``temperature``, ``top_k``, ``top_p``, ``min_p`` and ``state.generator``."""
    out = logits.argmax(-1)
    vocab = logits.shape[-1]
    plain: list[int] = []
    ranked: list[int] = []
    for i, r in enumerate(rows):
        if r.temperature > 0:
            (ranked if 0 < r.top_k < vocab or r.top_p < 1.0 else plain).append(i)
    for group in (plain, ranked):
        if not group:
            continue
        dev = logits.device
        temps = torch.tensor([rows[i].temperature for i in group], device=dev)
        u = torch.cat([torch.rand(1, generator=rows[i].state.generator) for i in group]).to(dev)
        lg = logits[group] / temps[:, None]
        idx = None
        if group is ranked:
            ks = [rows[i].top_k if 0 < rows[i].top_k < vocab else vocab for i in group]
            lg, idx = lg.topk(max(ks), dim=-1)  # sorted, descending
            col = torch.arange(lg.shape[1], device=dev)[None]
            lg = lg.masked_fill(col >= torch.tensor(ks, device=dev)[:, None], float("-inf"))
        probs = torch.softmax(lg, -1)
        if group is ranked:
            top_p = torch.tensor([rows[i].top_p for i in group], device=dev)[:, None]
            probs = probs * ((probs.cumsum(-1) - probs) < top_p)
        min_p = [rows[i].min_p for i in group]
        if any(min_p):  # drop tokens below min_p x the most likely one (after top-k/top-p)
            floor = torch.tensor(min_p, device=dev)[:, None] * probs.max(-1, keepdim=True).values
            probs = probs * (probs >= floor)
        cum = probs.cumsum(-1)
        pos = torch.searchsorted(cum, (u * cum[:, -1])[:, None], right=True).clamp_(max=cum.shape[1] - 1)
        bad = probs.gather(1, pos)[:, 0] <= 0  # float edge at u -> 1: never a token of probability 0
        if bool(bad.any()):
            pos[bad, 0] = probs[bad].argmax(-1)
        tok = pos[:, 0] if idx is None else idx.gather(1, pos)[:, 0]
        out[group] = tok
    return out.tolist()
