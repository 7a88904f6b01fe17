"""A small batched sampler over HF ``generate`` (rows of one length together, shared prompt encoded once,
per-call seed).

Stand-in for the runtime backend while labelling the tiny testbed model: labelling only needs
"continue these token ids K times", which :class:`HFSampler` provides behind the same callable
shape as a backend-based sampler would (see ``training/labels.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import BaseModel, Field

from sglang_stop.kvcache import expand_rows


class SampleParams(BaseModel):
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = -1
    max_new_tokens: int = Field(64, ge=1)


class HFSampler:
    """``sampler(prompts, params, seed) -> generated ids`` (EOS and padding stripped)."""

    def __init__(self, model, eos_id: int, pad_id: int, batch_size: int = 256) -> None:
        self.model, self.eos_id, self.pad_id, self.batch_size = model, eos_id, pad_id, batch_size

    @torch.no_grad()
    def __call__(self, prompts: Sequence[Sequence[int]], params: SampleParams, seed: int) -> list[list[int]]:
        torch.manual_seed(seed)
        out: list[list[int] | None] = [None] * len(prompts)
        # Rows of one length are sampled together; their common prefix (a problem's prompt, shared by its
        # P*K rows) is encoded once and its cache shared, instead of once per row.
        by_len: dict[int, list[int]] = {}
        for i, p in enumerate(prompts):
            by_len.setdefault(len(p), []).append(i)
        for _, rows in sorted(by_len.items()):
            for s in range(0, len(rows), self.batch_size):
                chunk = rows[s : s + self.batch_size]
                for i, g in zip(chunk, self._generate([prompts[i] for i in chunk], params)):
                    out[i] = g
        return [g if g is not None else [] for g in out]

    def _generate(self, chunk: Sequence[Sequence[int]], params: SampleParams) -> list[list[int]]:
        """Sample same-length rows (no padding), their longest common prefix encoded once."""
        dev = next(self.model.parameters()).device
        ids = torch.tensor([list(p) for p in chunk], dtype=torch.long, device=dev)
        width = ids.shape[1]
        same = (ids == ids[:1]).all(0).tolist()
        common = same.index(False) if False in same else width
        common = min(common, width - 1)  # generate needs at least one uncached input token
        kwargs = {}
        if common >= 2:
            cache = self.model(input_ids=ids[:1, :common], use_cache=True).past_key_values
            kwargs["past_key_values"] = expand_rows(cache, len(chunk))
        greedy = params.temperature == 0
        gen = self.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=not greedy,
            temperature=None if greedy else params.temperature,
            top_p=None if greedy else params.top_p,
            top_k=None if (greedy or params.top_k < 1) else params.top_k,
            max_new_tokens=params.max_new_tokens,
            eos_token_id=self.eos_id,
            pad_token_id=self.pad_id,
            **kwargs,
        )[:, width:]
        res = []
        for row in gen.tolist():
            if self.eos_id in row:
                row = row[: row.index(self.eos_id)]
            res.append([t for t in row if t != self.pad_id])
        return res
