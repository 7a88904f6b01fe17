"""What the program and scorers need from a backend beyond sglang's ``BaseBackend``.

SGLang's frontend only ever hands a backend a ``StreamExecutor`` and gets text back. Pruning needs
more: per-branch token ids and logprobs, a per-branch seed, freeing a pruned branch's KV at once, and
(for STOP) access to a branch's cached prefix KV. Both our backends (in-process ``LocalBackend`` and
the server's ``StopEndpoint``) implement these; the program uses nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel

if TYPE_CHECKING:
    import torch

    from sglang_stop.scorers.base import Branch

T = TypeVar("T")


class TokenUsage(BaseModel):
    """Counters a backend keeps; benchmarks and the re-encoding test read them."""

    prompt_tokens: int = 0  # prompt tokens encoded (shared prompts counted once)
    generated_tokens: int = 0  # tokens sampled
    reencoded_tokens: int = 0  # tokens fed to the model whose KV already existed in a branch (should be 0)
    forward_tokens: int = 0  # all token positions run through the model (incl. scoring)


@dataclass
class PrefixKV:
    """A branch's cached state: KV of every token in ``token_ids`` (prompt + generated).

    ``past[layer] = (key, value)``, each ``[1, kv_heads, len(token_ids), head_dim]``; read-only.
    """

    token_ids: list[int]
    past: tuple[tuple[torch.Tensor, torch.Tensor], ...]


@runtime_checkable
class PathBackend(Protocol):
    def bind_branch(self, exe: Any, *, index: int, seed: int) -> None:
        """Give a forked executor its fork index and sampling seed (before its first gen)."""

    def branch_view(self, exe: Any, index: int) -> Branch:
        """Token ids, text, per-token logprobs of a branch; ``handle`` identifies it to the backend."""

    def release(self, exe: Any) -> None:
        """Forget a branch and free its KV now (a pruned path)."""

    def usage(self) -> TokenUsage: ...


@runtime_checkable
class PrefixKVBackend(Protocol):
    """In-process access to cached prefix KV, run on the thread that owns the model."""

    def with_prefix_kv(self, handles: Sequence[Any], fn: Callable[[Any, list[PrefixKV]], T]) -> T:
        """Commit pending tokens of each branch, then call ``fn(model, kvs)`` between decode steps."""
        ...


@runtime_checkable
class StopScoringBackend(Protocol):
    """A backend that scores STOP itself (an SGLang server running the plugin: ``StopEndpoint``)."""

    def stop_score(self, handles: Sequence[Any]) -> list[float]:
        """One STOP score per branch handle (``Branch.handle``), same order."""
        ...
