"""The branch tracker both backends share: which token ids an executor's text is, where a fork child
starts, a branch's seed, and the :class:`Branch` view the program and scorers read.

SGLang's frontend hands a backend only an executor (``sid``, ``text_``). Re-tokenising a branch's text
rarely gives back the ids it was sampled as (and so misses its cached KV), so each branch keeps its
ids and only text the program appends is tokenised. A fork child starts as a copy of its committed
parent (the one whose text is the longest prefix of the child's), so children share the parent's
prompt ids (and, in process, its KV).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sglang_stop.backends.base import Branch

if TYPE_CHECKING:
    from typing import Self  # 3.11+; annotations only (Python 3.10 is supported)

Encode = Callable[[str, bool], list[int]]  # (text, first) -> ids; ``first`` adds special tokens (BOS)


@dataclass
class BranchState:
    """One executor's sequence: ``ids`` covers ``text`` (all of the executor's text so far) exactly."""

    text: str = ""
    ids: list[int] = field(default_factory=list)
    prompt_len: int = 0  # ids before the first sampled token (the prompt)
    index: int = -1  # position in its fork, once bound
    seed: int | None = None  # sampling seed, once bound (or derived from the backend's seed)
    logprobs: list[float] = field(default_factory=list)  # one record per generated token in ``ids``
    top_logprobs: list[list[float]] = field(default_factory=list)
    entropies: list[float] = field(default_factory=list)
    sampled: int = 0  # tokens sampled over all generate calls
    finished: bool = False  # hit EOS / a stop token: nothing more to generate
    finish_reason: str | None = None

    def fork(self) -> Self:
        """A child starting from this state's ids (its own records, seed and index)."""
        return type(self)(text=self.text, ids=list(self.ids), prompt_len=len(self.ids))

    def view(self, index: int, tokenizer: Any) -> Branch:
        gen = self.ids[self.prompt_len :]
        return Branch(
            index=index,
            prompt_ids=self.ids[: self.prompt_len],
            generated_ids=gen,
            text=tokenizer.decode(gen, skip_special_tokens=True),
            logprobs=list(self.logprobs),
            top_logprobs=[list(r) for r in self.top_logprobs],
            entropies=list(self.entropies),
            handle=self,
            finished=self.finished,
            sampled=self.sampled,
            finish_reason=self.finish_reason,
        )


S = TypeVar("S", bound=BranchState)


class BranchTracker(Generic[S]):
    """Executor sid -> its state (thread-safe). ``new`` makes an empty state; ``seed`` (if set) seeds
    states that no :meth:`bind` reached, in creation order, so a program without forks reproduces."""

    def __init__(self, new: Callable[[], S], seed: int | None = None) -> None:
        self._new = new
        self.seed = seed
        self._unbound = 0  # states seeded from ``seed`` so far
        self._states: dict[str, S] = {}
        self._committed: dict[str, tuple[str, S]] = {}  # sid -> (text, state) at fork time
        self._bindings: dict[str, tuple[int, int]] = {}  # sid -> (index, seed)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._states)

    def get(self, exe: Any) -> S:
        """The executor's state as it is (no tokenising); KeyError when it has none (or was released)."""
        with self._lock:
            return self._states[exe.sid]

    def find(self, sids: Collection[str]) -> list[S]:
        with self._lock:
            return [st for sid in sids if (st := self._states.get(sid)) is not None]

    def state_for(self, exe: Any, encode: Encode, restart: Callable[[S], None] | None = None) -> S:
        """The executor's state, with any text appended since last time tokenised by ``encode``.

        Text rewritten under the branch (not an append) raises, unless ``restart(state)`` is given:
        then the state is told (to drop its KV) and its ids are the whole text tokenised afresh."""
        with self._lock:
            st = self._states.get(exe.sid)
            if st is None:
                st = self._states[exe.sid] = self._create(exe)
        text = exe.text_
        if text != st.text:
            if text.startswith(st.text):
                st.ids = st.ids + encode(text[len(st.text) :], not st.ids)
                if not st.sampled:
                    st.prompt_len = len(st.ids)
            elif restart is None:
                raise RuntimeError("branch text was rewritten; only appending is supported")
            else:
                restart(st)
                st.ids = encode(text, True)
                st.prompt_len = len(st.ids)
            st.text = text
        return st

    def _create(self, exe: Any) -> S:
        """A fork child from its committed parent (longest matching text), else an empty state. Locked."""
        parent: tuple[str, S] | None = None
        for text, cand in self._committed.values():
            if exe.text_.startswith(text) and (parent is None or len(text) > len(parent[0])):
                parent = (text, cand)
        st = parent[1].fork() if parent is not None else self._new()
        bind = self._bindings.get(exe.sid)
        if bind is not None:
            st.index, st.seed = bind
        elif self.seed is not None:
            self._unbound += 1
            st.seed = (self.seed * 1_000_003 + self._unbound) % (2**63)
        return st

    def commit(self, exe: Any, st: S) -> None:
        """Record ``st`` (the executor's state, its text now fully in ids) as a fork parent."""
        with self._lock:
            self._committed[exe.sid] = (exe.text_, st)

    def bind(self, exe: Any, index: int, seed: int) -> None:
        """Give a forked executor its fork index and seed (its state, made now or later, takes them)."""
        with self._lock:
            self._bindings[exe.sid] = (index, seed)
            st = self._states.get(exe.sid)
            if st is not None:
                st.index, st.seed = index, seed

    def release(self, exe: Any) -> None:
        with self._lock:
            self._states.pop(exe.sid, None)
            self._committed.pop(exe.sid, None)
            self._bindings.pop(exe.sid, None)


def realign(ids: list[int], text: str, tokenizer: Any, encode: Callable[[str], list[int]]) -> tuple[int, list[int]]:
    """Ids for ``text``, a prefix of what ``ids`` decode to (a stop string cut the text, not the ids):
    the longest prefix of ``ids`` that decodes into ``text``, then the rest of ``text`` tokenised.
    Returns (how many of ``ids`` were kept, the new ids)."""
    keep = len(ids)
    while keep > 0 and not text.startswith(tokenizer.decode(ids[:keep], skip_special_tokens=True)):
        keep -= 1
    rest = text[len(tokenizer.decode(ids[:keep], skip_special_tokens=True)) :]
    return keep, ids[:keep] + encode(rest)
