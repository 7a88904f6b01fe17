"""Left-padded batches of token id rows: the one layout every batched re-encode here uses (the last real
token of every row sits in the last column, so ``hidden[:, -1]`` reads each row's last token)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int, device: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(ids, attention mask, position ids)``, each ``[B, max len]``; positions count real tokens only,
    so a padded row is encoded exactly as it would be alone."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(seqs), width), dtype=torch.long, device=device)
    for i, s in enumerate(seqs):
        ids[i, width - len(s) :] = torch.tensor(list(s), dtype=torch.long, device=device)
        mask[i, width - len(s) :] = 1
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)
