"""A small batched sampler over HF ``generate`` (left-padded, per-call seed).

Stand-in for the runtime backend while labelling the tiny testbed model: labelling only needs
"continue these token ids K times", which :class:`HFSampler` provides behind the same callable
shape as a backend-based sampler would (see ``training/labels.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import BaseModel, Field


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
        out: list[list[int]] = []
        dev = next(self.model.parameters()).device
        for s in range(0, len(prompts), self.batch_size):
            chunk = prompts[s : s + self.batch_size]
            width = max(len(p) for p in chunk)
            ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, p in enumerate(chunk):
                ids[i, width - len(p) :] = torch.tensor(list(p))
                mask[i, width - len(p) :] = 1
            greedy = params.temperature == 0
            gen = self.model.generate(
                input_ids=ids.to(dev),
                attention_mask=mask.to(dev),
                do_sample=not greedy,
                temperature=None if greedy else params.temperature,
                top_p=None if greedy else params.top_p,
                top_k=None if (greedy or params.top_k < 1) else params.top_k,
                max_new_tokens=params.max_new_tokens,
                eos_token_id=self.eos_id,
                pad_token_id=self.pad_id,
            )[:, width:]
            for row in gen.tolist():
                if self.eos_id in row:
                    row = row[: row.index(self.eos_id)]
                out.append([t for t in row if t != self.pad_id])
        return out
