"""What the program and scorers need from a backend beyond sglang's ``BaseBackend``.

SGLang's frontend only ever hands a backend a ``StreamExecutor`` and gets text back. Pruning needs
more: per-branch token ids and logprobs, a per-branch seed, freeing a pruned branch's KV at once, and
(for STOP) access to a branch's cached prefix KV. Both our backends (in-process ``LocalBackend`` and
the server's ``StopEndpoint``) implement these; the program uses nothing else. :class:`Branch` is
what a backend shows of one path (the program and scorers read it), defined here so backends need
no scorer module.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel

if TYPE_CHECKING:
    import torch

T = TypeVar("T")


@dataclass
class Branch:
    """What the program and a scorer see of one path at a prune point."""

    index: int  # position in the original fork, 0..N-1 (stable across stages)
    prompt_ids: list[int]
    generated_ids: list[int]
    text: str  # generated text so far
    logprobs: list[float]  # log p(chosen token), one per generated token (temperature 1)
    top_logprobs: list[list[float]]  # top-k log p per generated token, descending
    entropies: list[float]  # entropy (nats) of the full next-token distribution per generated token
    handle: Any = None  # backend-owned; pass back to backend methods (e.g. prefix KV access)
    finished: bool = False  # ended with EOS / a stop token: nothing more to generate
    sampled: int = 0  # tokens sampled over all generate calls (a stop string's tail included)
    finish_reason: str | None = None  # the last gen's finish type ("stop", "length"), None before any

    @property
    def token_ids(self) -> list[int]:
        return self.prompt_ids + self.generated_ids


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


@runtime_checkable
class BranchAbortBackend(Protocol):
    """A backend shared by several requests that can cancel one request's branches on its own; its
    ``branch_view`` reads a branch without syncing it, so a progress poll may call it any time."""

    def abort_branches(self, sids: Collection[str], err: BaseException) -> int:
        """Fail and drop the decoding rows of these executors' branches now; returns how many."""
        ...
