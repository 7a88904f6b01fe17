"""STOP's learned parts and its one forward pass, shared by inference and training.

The base model is never modified: the LoRA "critique adapter" is applied through forward hooks (or,
for fp32 CPU inference, merged weights swapped into each Linear's forward) that exist only while the k
[STOP] tokens run, so the backend's model (which keeps decoding other paths between scoring calls) is
untouched, and several checkpoints can share one model. The prefix
is read from the KV cache the base model already wrote; only the k [STOP] tokens are computed.
Weights are kept under peft's names so the adapter loads with ``PeftModel.from_pretrained`` too.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import nn
from transformers.cache_utils import DynamicCache

from sglang_stop.kvcache import cache_staged
from sglang_stop.padding import left_pad

# A Hugging Face causal LM (PreTrainedModel). Typed loosely: torch's stubs type a Module's attributes as
# `Tensor | Module`, so `model.config` / `model.get_input_embeddings()` would not type-check.
HFModel = Any


DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class StopNetConfig(BaseModel):
    num_assess_tokens: int = Field(4, ge=1, description="k: the one learned [STOP] vector is repeated k times")
    mode: Literal["adapter", "no_adapter"] = Field(
        "adapter", description="no_adapter = linear probe on the base model's last prefix hidden state"
    )
    lora_r: int = Field(16, ge=1)
    lora_alpha: float = Field(32.0, gt=0)
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(default_factory=lambda: list(DEFAULT_TARGETS))


def target_linears(model: HFModel, targets: Sequence[str]) -> list[tuple[str, nn.Linear]]:
    """Base-model Linear layers whose last name component is a target (peft's suffix matching)."""
    wanted = set(targets)
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in wanted]


def decoder_of(model: HFModel) -> HFModel:
    """The bare decoder (``LlamaModel`` inside ``LlamaForCausalLM``): its output is after the final norm."""
    return getattr(model, "base_model", model)


class StopNet(nn.Module):
    """[STOP] embedding + LoRA factors (A, B per target Linear) + Linear(hidden, 2) head."""

    def __init__(self, cfg: StopNetConfig, model: HFModel) -> None:
        super().__init__()
        self.cfg = cfg
        hidden = model.config.get_text_config().hidden_size
        emb = model.get_input_embeddings().weight.detach()
        # Start at the mean input embedding: in-distribution for the base model's first layer.
        self.assess_embedding = nn.Parameter(emb.float().mean(0).clone())
        self.head = nn.Linear(hidden, 2)
        self.module_names: list[str] = []
        self.lora_A = nn.ParameterList()
        self.lora_B = nn.ParameterList()
        if cfg.mode == "adapter":
            for name, lin in target_linears(model, cfg.target_modules):
                a = torch.empty(cfg.lora_r, lin.in_features)
                nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # peft's default init; B = 0 -> starts as the base
                self.module_names.append(name)
                self.lora_A.append(nn.Parameter(a))
                self.lora_B.append(nn.Parameter(torch.zeros(lin.out_features, cfg.lora_r)))
            if not self.module_names:
                raise ValueError(f"no Linear layer matches target_modules {cfg.target_modules}")
        self.dropout = nn.Dropout(cfg.lora_dropout)

    @property
    def scale(self) -> float:
        return self.cfg.lora_alpha / self.cfg.lora_r

    @contextmanager
    def lora_active(self, model: HFModel) -> Iterator[None]:
        """Add ``scale * B A x`` to every target Linear's output, for the duration of the block only.

        Inference on fp32 CPU weights runs the merged weights ``W + scale * B A`` instead (made once per
        net, model and weights version, then reused): over a few rows the two rank-r matmuls and the add
        per Linear cost a fifth of the pass there (bench scoring, Lp=256). Elsewhere (training, bf16, accelerators) hooks add the
        low-rank term: a bf16 sum would round most of the small delta away, and device memory is dear.
        """
        if not torch.is_grad_enabled() and not self.training and self._mergeable(model):
            with self._merged(model):
                yield
            return
        with self._hooked(model):
            yield

    def _mergeable(self, model: HFModel) -> bool:
        w = model.get_input_embeddings().weight
        return w.device.type == "cpu" and w.dtype == torch.float32 and all(
            a.dtype == torch.float32 for a in self.lora_A)

    @contextmanager
    def _merged(self, model: HFModel) -> Iterator[None]:
        modules = dict(model.named_modules())
        lins = [modules[n] for n in self.module_names]
        # in-place updates (an optimizer step, a checkpoint load) bump a tensor's version; tensors made under
        # inference_mode have none, but they cannot be changed outside it either
        key = (id(model), tuple(lin.weight.data_ptr() for lin in lins[:1]),
               tuple(-1 if p.is_inference() else p._version for p in [*self.lora_A, *self.lora_B]))
        cached = self.__dict__.get("_merged_weights")
        if cached is None or cached[0] != key:
            with torch.no_grad():
                ws = [torch.addmm(lin.weight, b, a, alpha=self.scale) for lin, a, b in zip(lins, self.lora_A, self.lora_B)]
            self.__dict__["_merged_weights"] = cached = (key, ws)  # a plain attribute: not in state_dict
        before = [lin.__dict__.get("forward") for lin in lins]
        for lin, w in zip(lins, cached[1]):
            lin.forward = partial(F.linear, weight=w, bias=lin.bias)  # the instance's forward shadows the class's
        try:
            yield
        finally:
            for lin, f in zip(lins, before):
                if f is None:
                    del lin.forward
                else:
                    lin.forward = f

    @contextmanager
    def _hooked(self, model: HFModel) -> Iterator[None]:
        modules = dict(model.named_modules())
        handles = []
        for name, a, b in zip(self.module_names, self.lora_A, self.lora_B):

            def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor, a=a, b=b) -> torch.Tensor:
                x = self.dropout(inp[0].to(a.dtype))
                return out + (self.scale * F.linear(F.linear(x, a), b)).to(out.dtype)

            handles.append(modules[name].register_forward_hook(hook))
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def run_tokens(
        self,
        model: HFModel,
        cache: DynamicCache,
        prefix_mask: torch.Tensor,
        inputs_embeds: torch.Tensor,
        lora: bool,
    ) -> torch.Tensor:
        """Run new tokens after a left-padded cache; return the final (normed) hidden of the last one.

        ``cache`` holds ``[B, kv_heads, L, head_dim]`` per layer, left-padded; ``prefix_mask`` ``[B, L]``
        marks real positions. New tokens get explicit positions ``len_i + j`` so a padded branch sees
        exactly what it would alone.
        """
        bsz, n_new = inputs_embeds.shape[:2]
        lens = prefix_mask.sum(1)
        mask = torch.cat([prefix_mask, prefix_mask.new_ones(bsz, n_new)], dim=1)
        pos = lens.unsqueeze(1) + torch.arange(n_new, device=lens.device).unsqueeze(0)
        ctx = self.lora_active(model) if lora else _null()
        with ctx:
            out = decoder_of(model)(
                inputs_embeds=inputs_embeds, past_key_values=cache, attention_mask=mask, position_ids=pos, use_cache=True
            )
        return out.last_hidden_state[:, -1]

    @property
    def new_tokens(self) -> int:
        """Tokens run after the cache: k [STOP] tokens, or (no_adapter) the prefix's last token."""
        return 1 if self.cfg.mode == "no_adapter" else self.cfg.num_assess_tokens

    def logits_from_cache(
        self,
        model: HFModel,
        cache: DynamicCache,
        prefix_mask: torch.Tensor,
        last_token: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``[B, 2]`` logits. adapter: k [STOP] tokens with LoRA after the whole prefix cache.

        no_adapter: ``cache`` must hold all but the last prefix token, given as ``last_token`` ``[B]``;
        its base hidden state feeds the head (the linear-probe ablation).
        """
        bsz = prefix_mask.shape[0]
        if self.cfg.mode == "adapter":
            dtype = model.get_input_embeddings().weight.dtype
            emb = self.assess_embedding.to(dtype).view(1, 1, -1).expand(bsz, self.cfg.num_assess_tokens, -1)
            hidden = self.run_tokens(model, cache, prefix_mask, emb, lora=True)
        else:
            if last_token is None:
                raise ValueError("no_adapter mode needs last_token")
            emb = model.get_input_embeddings()(last_token.view(bsz, 1))
            with torch.no_grad():
                hidden = self.run_tokens(model, cache, prefix_mask, emb, lora=False)
        return self.head(hidden.to(self.head.weight.dtype))

    # --- the two ways in -------------------------------------------------------------------------

    def logits_from_prefix_kvs(self, model: HFModel, kvs: Sequence) -> torch.Tensor:
        """Inference: score cached branches (``PrefixKV`` list) of different lengths in one batch,
        reading each branch's own KV tensors where they lie (``cache_staged``)."""
        dev = kvs[0].past[0][0].device
        keep_last = self.cfg.mode == "no_adapter"
        lens = [len(kv.token_ids) - (1 if keep_last else 0) for kv in kvs]
        width = max(lens)
        mask = torch.zeros(len(kvs), width, dtype=torch.long, device=dev)
        for i, n in enumerate(lens):
            mask[i, width - n :] = 1
        last = torch.tensor([kv.token_ids[-1] for kv in kvs], device=dev) if keep_last else None
        cache = cache_staged([kv.past for kv in kvs], lens, self.new_tokens)
        return self.logits_from_cache(model, cache, mask, last)

    def logits_from_ids(self, model: HFModel, prefixes: Sequence[Sequence[int]], pad_id: int = 0) -> torch.Tensor:
        """Training: the frozen base encodes the prefixes once (no grad), then the same cached path."""
        dev = next(model.parameters()).device
        keep_last = self.cfg.mode == "no_adapter"
        seqs = [list(p[:-1]) if keep_last else list(p) for p in prefixes]
        ids, mask, pos = left_pad(seqs, pad_id, dev)
        with torch.no_grad():
            out = decoder_of(model)(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
        last = torch.tensor([p[-1] for p in prefixes], device=dev) if keep_last else None
        return self.logits_from_cache(model, out.past_key_values, mask, last)



@contextmanager
def _null() -> Iterator[None]:
    yield
