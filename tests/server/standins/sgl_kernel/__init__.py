"""STAND-IN for SGLang's native CPU kernels (the real ``sgl_kernel`` CPU build needs an AMX Xeon and a
source build; no wheel exists). Test harness only: it implements, in plain torch, just what the CPU
``torch_native`` path of sglang 0.5.23 calls, so the real scheduler, radix cache, LoRA manager and HTTP
server run on an ordinary CPU. Never installed with the package; tests/server puts it on PYTHONPATH.
"""

from __future__ import annotations

import torch

__version__ = "0.0.0+standin"
IS_STANDIN = True


def assign_req_to_token_pool_cpu(
    req_pool_indices: torch.Tensor,
    req_to_token: torch.Tensor,
    start_offset: torch.Tensor,
    end_offset: torch.Tensor,
    out_cache_loc: torch.Tensor,
    pool_len: int,
) -> None:
    """req_to_token[req, start:end] = the next (end - start) entries of out_cache_loc, request by request
    (the semantics of sglang's triton ``assign_req_to_token_pool``)."""
    del pool_len
    offset = 0
    for req, start, end in zip(req_pool_indices.tolist(), start_offset.tolist(), end_offset.tolist()):
        n = end - start
        req_to_token[req, start:end] = out_cache_loc[offset : offset + n].to(req_to_token.dtype)
        offset += n


def __getattr__(name: str):
    """Other kernels are importable (sglang imports them at module level) but raise if ever called."""
    if name.startswith("__"):
        raise AttributeError(name)

    def missing(*args, **kwargs):
        raise NotImplementedError(f"sgl_kernel stand-in (tests/server/standins) does not implement {name}")

    missing.__name__ = name
    return missing
