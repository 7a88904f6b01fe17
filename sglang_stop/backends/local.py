"""In-process SGLang backend over a Hugging Face causal LM, with continuous batching.

SGLang's frontend runs every forked branch on its own thread and calls ``generate`` once per branch.
Running those calls one by one would decode N paths serially, so this backend owns the model on a
single scheduler thread: ``generate`` enqueues a request and waits; the scheduler admits requests
into one live batch and decodes all rows together, one token per step (as the SGLang server does).

Each branch keeps its token ids and its KV cache. Continuing a branch (after a prune point) feeds
only tokens that have no KV yet, so a prefix is never re-encoded (``usage().reencoded_tokens``
counts violations). A fork's children share the parent's prompt KV (tensors are never mutated in
place: appends build new tensors), and a pruned branch's KV is dropped at once by ``release``.

This module is the SGLang adapter and the scheduler thread; which ids a branch's text is (and where a
fork child starts) is ``branches.py``, shared with ``StopEndpoint``; the padded KV batch and the
sampler are ``batching.py``.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from sglang.lang.backend.base_backend import BaseBackend
from sglang.lang.chat_template import get_chat_template
from sglang.lang.choices import ChoicesDecision, ChoicesSamplingMethod, token_length_normalized
from sglang.lang.ir import SglSamplingParams
from transformers.cache_utils import DynamicCache

from sglang_stop.backends.base import Branch, PrefixKV, TokenUsage
from sglang_stop.backends.batching import GenRequest, KVBranchState, LiveBatch, Past, sample_rows
from sglang_stop.backends.branches import BranchTracker, realign
from sglang_stop.backends.constrained import Grammars, resolve_dtype
from sglang_stop.errors import RunCancelled
from sglang_stop.kvcache import cache_from_past, past_of

T = TypeVar("T")
_Entries = list[tuple[float | None, int, str]]  # (logprob, token id, token text) per choice token


@dataclass
class _Job:
    fn: Callable[[], Any]
    future: Future


def _fresh(err: BaseException) -> BaseException:
    """A new exception like ``err``: one instance raised in many threads would pile up tracebacks."""
    return type(err)(*err.args)


class LocalBackend(BaseBackend):
    """SGLang ``BaseBackend`` running a HF causal LM in this process (CPU or CUDA)."""

    def __init__(self, model: Any, tokenizer: Any, *, model_name: str = "local", admit_wait_s: float = 0.002,
                 json_whitespace: int | None = None, seed: int | None = None):
        """``json_whitespace``: whitespace a ``json_schema`` gen may put between tokens (None: any, as
        the server's default; 0: none, for small models that would pad forever). ``seed``: sampling
        generators of branches not bound by :meth:`bind_branch` derive from it in creation order
        (None: fresh randomness), so a program without forks reproduces across backends."""
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.device = next(model.parameters()).device
        self.chat_template = get_chat_template("default")
        self.admit_wait_s = admit_wait_s
        eos = set()
        for src in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
            if isinstance(src, int):
                eos.add(src)
            elif src:
                eos.update(int(x) for x in src)
        self.eos_ids = eos
        self.seed = seed
        vocab = model.get_output_embeddings().weight.shape[0]
        self._grammars = Grammars(tokenizer, vocab, eos, json_whitespace=json_whitespace)
        self._branches: BranchTracker[KVBranchState] = BranchTracker(KVBranchState, seed=seed)
        self._usage = TokenUsage()
        self._queue: queue.Queue[GenRequest | _Job | None] = queue.Queue()
        self._batch = LiveBatch()
        self.max_batch_seen = 0
        self._cancelled: BaseException | None = None  # set by abort(): every generate fails with it
        self._thread = threading.Thread(target=self._loop, name="sglang-stop-scheduler", daemon=True)
        self._thread.start()

    # ---- sglang BaseBackend -------------------------------------------------------------------
    def get_model_name(self) -> str:
        return self.model_name

    def commit_lazy_operations(self, s: Any) -> None:
        """Called by ``fork``: encode the parent's text once so all children share its KV."""
        state = self._state_for(s)
        self._call(lambda: self._extend(state, keep_last=True))
        self._branches.commit(s, state)

    def generate(self, s: Any, sampling_params: SglSamplingParams) -> tuple[str, dict[str, Any]]:
        req = self._submit(s, sampling_params, stream=False)
        if isinstance(req, tuple):
            return req
        text, reason = req.future.result()
        return text, self._meta(req, reason, sampling_params)

    def generate_stream(self, s: Any, sampling_params: SglSamplingParams) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yield ``(text_delta, meta_info)`` as tokens are sampled (as ``RuntimeEndpoint`` does from the
        server's stream). Text that could still turn into a stop string, or an incomplete UTF-8
        character, is held back, so the deltas join to exactly what ``generate`` returns."""
        req = self._submit(s, sampling_params, stream=True)
        if isinstance(req, tuple):
            yield req
            return
        assert req.chunks is not None
        # a stop regex can match text of any length: then nothing is streamed before the gen ends
        hold = 1 << 30 if req.stop_regex else max((len(x) for x in req.stop), default=1) - 1
        emitted = ""
        while True:
            try:
                n = req.chunks.get(timeout=0.05)
            except queue.Empty:
                if req.future.done():
                    break
                continue
            while n is not None and not req.chunks.empty():
                n = req.chunks.get_nowait()
            if n is None:
                break
            text = self.tokenizer.decode(req.new_ids[:n], skip_special_tokens=True).rstrip("\ufffd")
            text = text[: max(len(emitted), len(text) - hold)]
            if len(text) > len(emitted) and text.startswith(emitted):
                delta, emitted = text[len(emitted) :], text
                yield delta, self._meta(req, None, sampling_params, n)
        final, reason = req.future.result()
        if not final.startswith(emitted):  # should not happen: decoding is prefix-stable
            raise RuntimeError("streamed text diverged from the final text")
        yield final[len(emitted) :], self._meta(req, reason, sampling_params)

    def _submit(self, s: Any, sp: SglSamplingParams, stream: bool) -> GenRequest | tuple[str, dict[str, Any]]:
        """Queue one gen for the scheduler (or answer at once for a branch that already hit EOS)."""
        if getattr(s, "_sglang_stop_ended", False):
            raise RunCancelled("branch already ended")
        if self._cancelled is not None:
            raise _fresh(self._cancelled)
        resolve_dtype(sp)
        if int(sp.n or 1) != 1:
            raise ValueError(f"n: {sp.n} completions of one gen are not offered in process; fork the state (s.fork(n))")
        if sp.logprob_start_len is not None and sp.logprob_start_len >= 0:
            raise ValueError("logprob_start_len: prompt logprobs would re-encode the cached prefix; "
                             "the in-process backend returns output logprobs only (leave it unset)")
        constraint = self._grammars.constraint(sp.regex, sp.json_schema)
        state = self._state_for(s)
        if state.finished:
            meta = {"prompt_tokens": len(state.ids), "completion_tokens": 0,
                    "finish_reason": {"type": state.finish_reason}, "cached_tokens": state.kv_len}
            return "", meta
        stop = [sp.stop] if isinstance(sp.stop, str) else list(sp.stop or [])
        try:
            stop_regex = [re.compile(x) for x in ([sp.stop_regex] if isinstance(sp.stop_regex, str) else sp.stop_regex or [])]
        except re.error as e:
            raise ValueError(f"stop_regex: {e}") from None
        req = GenRequest(
            state=state,
            max_new_tokens=int(sp.max_new_tokens),
            temperature=float(sp.temperature),
            top_p=float(sp.top_p),
            top_k=int(sp.top_k),
            stop=[x for x in stop if x],
            stop_token_ids=set(sp.stop_token_ids or ()),
            ignore_eos=bool(sp.ignore_eos),
            future=Future(),
            min_new_tokens=int(sp.min_new_tokens or 0),
            min_p=float(sp.min_p or 0.0),
            frequency_penalty=float(sp.frequency_penalty or 0.0),
            presence_penalty=float(sp.presence_penalty or 0.0),
            stop_regex=stop_regex,
            constraint=constraint,
            top_logprobs_num=int(sp.top_logprobs_num or 0) if sp.return_logprob else 0,
            chunks=queue.Queue() if stream else None,
        )
        req.cached, req.prompt_tokens = state.kv_len, len(state.ids)
        req.prefix_text = s.text_
        if self._cancelled is not None:
            raise _fresh(self._cancelled)
        self._queue.put(req)
        return req

    def _meta(self, req: GenRequest, reason: dict[str, Any] | None, sp: SglSamplingParams,
              n: int | None = None) -> dict[str, Any]:
        """``meta_info`` keyed as the SGLang server returns it (logprobs as (logprob, id, text|None))."""
        if reason is not None:
            req.state.text = req.prefix_text + req.final_text
        n = len(req.new_ids) if n is None else n
        meta: dict[str, Any] = {
            "prompt_tokens": req.prompt_tokens,
            "completion_tokens": n,
            "cached_tokens": req.cached,
            "finish_reason": reason,
            "e2e_latency": time.perf_counter() - req.start_time,
        }
        if sp.return_logprob:
            with_text = bool(sp.return_text_in_logprobs)

            def entry(lp: float, tid: int) -> tuple[float, int, str | None]:
                return (lp, tid, self.tokenizer.decode([tid]) if with_text else None)

            meta["input_token_logprobs"] = []
            meta["output_token_logprobs"] = [entry(lp, t) for lp, t in req.out_logprobs[:n]]
            meta["output_token_logprobs_length"] = len(meta["output_token_logprobs"])
            if req.top_logprobs_num > 0:
                meta["input_top_logprobs"] = []
                meta["output_top_logprobs"] = [[entry(lp, t) for lp, t in row] for row in req.out_top[:n]]
        return meta

    def select(
        self,
        s: Any,
        choices: list[str],
        temperature: float,
        choices_method: ChoicesSamplingMethod | None = None,
    ) -> ChoicesDecision:
        """Score each choice's tokens after the branch's KV and let ``choices_method`` decide (default:
        token-length-normalised logprob, as SGLang). Logprob lists are laid out as the server's
        ``input_token_logprobs``: (logprob, token id, text) per choice token; the unconditional ones
        (for ``unconditional_likelihood_normalized``) come from the choice alone, first entry None."""
        state = self._state_for(s)
        method = choices_method or token_length_normalized
        ids_of = [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in choices]

        def entries(ids: list[int], lps: list[float | None]) -> _Entries:
            return [(lp, t, self.tokenizer.decode([t])) for lp, t in zip(lps, ids)]

        def run() -> tuple[list[_Entries], list[_Entries] | None]:
            self._extend(state, keep_last=False)
            assert state.next_logits is not None
            first = torch.log_softmax(state.next_logits.float(), -1)
            cond: list[_Entries] = []
            uncond: list[_Entries] = []
            for ids in ids_of:
                lps: list[float | None] = [float(first[ids[0]])] if ids else []
                if len(ids) > 1:
                    logits, _ = self._forward(ids[:-1], state.past, state.kv_len)
                    rest = torch.log_softmax(logits.float(), -1)
                    lps += [float(rest[j, ids[j + 1]]) for j in range(len(ids) - 1)]
                cond.append(entries(ids, lps))
                if method.requires_unconditional_logprobs and not ids:
                    uncond.append([])
                elif method.requires_unconditional_logprobs:
                    logits, _ = self._forward(ids, None, 0)
                    alone = torch.log_softmax(logits.float(), -1)
                    uncond.append(entries(ids, [None] + [float(alone[j, ids[j + 1]]) for j in range(len(ids) - 1)]))
            return cond, (uncond if method.requires_unconditional_logprobs else None)

        cond, uncond = self._call(run)
        normalized = [sum(lp for lp, _, _ in c if lp is not None) / len(c) if c else float("-inf") for c in cond]
        return method(
            choices=choices, normalized_prompt_logprobs=normalized, input_token_logprobs=cond,
            output_token_logprobs=[[] for _ in choices], unconditional_token_logprobs=uncond,
        )

    def end_program(self, s: Any) -> None:
        """Release each executor's branch. SGLang calls this right after the program function
        returns, while its gens may still be queued on the executor's worker (``prog.run()``
        without sync): then the release waits, off this thread, for the worker to run them. A
        cancelled run (:meth:`abort`) releases at once, so queued gens fail instead of reviving it."""
        here = threading.current_thread()
        for exe in s if isinstance(s, list) else [s]:
            worker = getattr(exe, "worker", None)
            q = getattr(exe, "queue", None)
            queued = q is not None and q.unfinished_tasks > 1  # beyond the None that end() just put
            if worker is None or not worker.is_alive() or here is worker or not queued or self._cancelled:
                self.release(exe)
            else:
                threading.Thread(target=self._release_after, args=(exe, worker), daemon=True).start()

    def _release_after(self, exe: Any, worker: threading.Thread) -> None:
        worker.join()
        self.release(exe)

    # ---- PathBackend ---------------------------------------------------------------------------
    def bind_branch(self, exe: Any, *, index: int, seed: int) -> None:
        self._branches.bind(exe, index, seed)

    def branch_view(self, exe: Any, index: int) -> Branch:
        """The branch as it is now, without syncing it (a progress poll may call it mid-gen);
        KeyError once released."""
        return self._branches.get(exe).view(index, self.tokenizer)

    def release(self, exe: Any) -> None:
        exe._sglang_stop_ended = True  # a gen still queued on its worker must not revive the branch
        self._branches.release(exe)

    def usage(self) -> TokenUsage:
        return self._usage.model_copy()

    def live_branches(self) -> int:
        return len(self._branches)

    # ---- PrefixKVBackend -------------------------------------------------------------------------
    def with_prefix_kv(self, handles: Sequence[Any], fn: Callable[[Any, list[PrefixKV]], T]) -> T:
        def run() -> T:
            kvs = []
            for st in handles:
                self._extend(st, keep_last=False)
                assert st.past is not None
                kvs.append(PrefixKV(token_ids=list(st.ids), past=st.past))
            return fn(self.model, kvs)

        return self._call(run)

    def call_in_model_thread(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` between decode steps on the thread that owns the model."""
        return self._call(fn)

    def abort(self, err: BaseException) -> None:
        """Fail every waiting and later ``generate`` with ``err`` (a cancelled run: its program
        threads unwind and end their branches) until :meth:`resume_requests`. Takes effect between
        decode steps, so within one step's time."""
        self._cancelled = err
        self._queue.put(_Job(lambda: self._fail_all(_fresh(err)), Future()))

    def abort_branches(self, sids: Collection[str], err: BaseException) -> int:
        """Fail (with ``err``) and drop the decoding rows of these executors' branches, between decode
        steps; other rows decode on. For one request's cancel on a backend several requests share
        (``serve``): :meth:`abort` would fail them all. A gen submitted but not yet admitted to the
        batch is untouched: call again until none of the caller's gens is left. Returns rows dropped."""

        def drop_rows() -> int:
            states = {id(st) for st in self._branches.find(sids)}
            b = self._batch
            drop = [i for i, r in enumerate(b.rows) if id(r.state) in states]
            for i in drop:
                if not b.rows[i].future.done():
                    b.rows[i].future.set_exception(_fresh(err))
            if drop:
                b.remove(drop)
            return len(drop)

        return self._call(drop_rows)

    def resume_requests(self) -> None:
        """Accept ``generate`` calls again after :meth:`abort`."""
        self._cancelled = None

    def shutdown(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    # ---- states ----------------------------------------------------------------------------------
    def _encode(self, text: str, first: bool) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=first)["input_ids"])

    def _state_for(self, s: Any) -> KVBranchState:
        """The executor's branch state, with any text appended since our last generate tokenised."""
        st = self._branches.state_for(s, self._encode, restart=self._restart)
        if st.generator is None:
            seed = st.seed if st.seed is not None else torch.seed() % (2**63)
            st.generator = torch.Generator().manual_seed(seed)
        return st

    def _restart(self, st: KVBranchState) -> None:
        """Text was rewritten under the branch: drop its KV (counted as re-encoding; should not happen)."""
        self._usage.reencoded_tokens += st.kv_len
        st.past, st.kv_len, st.next_logits = None, 0, None

    # ---- model thread ------------------------------------------------------------------------------
    def _call(self, fn: Callable[[], T]) -> T:
        if threading.current_thread() is self._thread:
            return fn()
        fut: Future = Future()
        self._queue.put(_Job(fn, fut))
        return fut.result()

    @torch.inference_mode()
    def _forward(self, ids: list[int], past: Past | None, past_len: int) -> tuple[torch.Tensor, Past]:
        """Batch-1 forward of ``ids`` after ``past``; returns per-position logits and the new full past."""
        inp = torch.tensor([ids], device=self.device)
        pos = torch.arange(past_len, past_len + len(ids), device=self.device)[None]
        cache = cache_from_past(past) if past is not None else DynamicCache()
        out = self.model(input_ids=inp, position_ids=pos, past_key_values=cache, use_cache=True)
        self._usage.forward_tokens += len(ids)
        return out.logits[0], past_of(out.past_key_values)

    def _extend(self, st: KVBranchState, keep_last: bool) -> None:
        """Encode pending tokens (all, or all but the last) into the state's KV."""
        end = len(st.ids) - (1 if keep_last else 0)
        if end <= st.kv_len:
            return
        ids = st.ids[st.kv_len : end]
        logits, past = self._forward(ids, st.past, st.kv_len)
        self._usage.prompt_tokens += len(ids)
        st.past, st.kv_len = past, end
        st.next_logits = None if keep_last else logits[-1]

    def _loop(self) -> None:
        while True:
            items: list[GenRequest | _Job | None] = []
            if len(self._batch) == 0:
                items.append(self._queue.get())
                deadline = time.perf_counter() + self.admit_wait_s
                while time.perf_counter() < deadline:  # let a fork's sibling calls arrive together
                    try:
                        items.append(self._queue.get(timeout=max(0.0, deadline - time.perf_counter())))
                    except queue.Empty:
                        break
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            admit: list[GenRequest] = []
            for it in items:
                if it is None:
                    self._fail_all(RuntimeError("backend shut down"))
                    return
                if isinstance(it, GenRequest) and self._cancelled is not None:
                    it.future.set_exception(_fresh(self._cancelled))
                    continue
                if isinstance(it, _Job):
                    try:
                        it.future.set_result(it.fn())
                    except BaseException as e:  # surface to the caller, keep serving
                        it.future.set_exception(e)
                else:
                    admit.append(it)
            try:
                if admit:
                    self._admit(admit)
                if len(self._batch):
                    self._step()
            except BaseException as e:
                self._fail_all(e, admit)

    def _fail_all(self, err: BaseException, extra: Sequence[GenRequest] = ()) -> None:
        """A model error fails every waiting request (never leaves a caller blocked) and resets the batch."""
        for r in list(self._batch.rows) + list(extra):
            if not r.future.done():
                r.future.set_exception(_fresh(err))
        self._batch = LiveBatch()

    def _admit(self, reqs: list[GenRequest]) -> None:
        ready = []
        for r in reqs:
            st = r.state
            pending = len(st.ids) - st.kv_len
            if pending == 0 and st.next_logits is None:
                # no logits to sample from: recompute the last token (only for an empty state)
                if not st.ids:
                    r.future.set_exception(ValueError("cannot generate from an empty prompt"))
                    continue
                raise AssertionError("state has full KV but no next-token logits")
            if st.kv_len == 0:
                # nothing cached yet (e.g. a one-token prompt): encode everything, sample from its logits
                self._extend(st, keep_last=False)
                pending = 0
            if r.max_new_tokens <= 0:
                self._finish(r, "length")
                continue
            if pending > 1:
                self._extend(st, keep_last=True)
            elif pending == 0:
                logits, st.next_logits = st.next_logits, None
                assert logits is not None
                tok = self._sample_rows(logits[None], [r])[0]
                if self._accept(r, tok, logits):
                    continue
            ready.append(r)
        if ready:
            self._batch.add(ready, self.device)
            self.max_batch_seen = max(self.max_batch_seen, len(self._batch))

    @torch.inference_mode()
    def _step(self) -> None:
        b = self._batch
        assert b.mask is not None and b.cache is not None
        inp = torch.tensor([[r.state.ids[-1]] for r in b.rows], device=self.device)
        pos = torch.tensor([[r.state.kv_len] for r in b.rows], device=self.device)
        ones = torch.ones(len(b), 1, dtype=b.mask.dtype, device=self.device)
        b.mask = torch.cat([b.mask, ones], dim=1)
        out = self.model(
            input_ids=inp,
            attention_mask=b.mask,
            position_ids=pos,
            past_key_values=b.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        b.cache = out.past_key_values
        self._usage.forward_tokens += len(b)
        for r in b.rows:
            r.state.kv_len += 1
        logits = out.logits[:, -1]
        toks = self._sample_rows(logits, b.rows)
        done = []
        for i, (r, tok) in enumerate(zip(b.rows, toks)):
            if self._accept(r, tok, logits[i], row=i):
                done.append(i)
        if done:
            b.remove(done)

    def _accept(self, r: GenRequest, tok: int, logits: torch.Tensor, row: int | None = None) -> bool:
        """Append a sampled token; finish the request if it ended. Returns True when finished.

        EOS ends the branch (it stays in its ids, outside its text). A token of ``stop_token_ids``, or
        EOS under a grammar, ends only this gen: as the server trims it from the text, it is not kept,
        and the logits it came from stay as the state's next-token logits (its KV covers all tokens),
        so a later gen on the branch continues without a forward."""
        st = r.state
        early = len(r.new_ids) < r.min_new_tokens
        if (tok in r.stop_token_ids and not r.ignore_eos and not early) or (
            r.constraint is not None and tok in self.eos_ids
        ):
            if row is not None:
                st.past = self._batch.row_past(row)
            st.next_logits = logits
            for records in (st.logprobs, st.top_logprobs, st.entropies, r.out_logprobs):
                records.pop()  # the sampling records of the token not kept (ids and records stay aligned)
            if r.top_logprobs_num > 0:
                r.out_top.pop()
            self._finish(r, {"type": "stop", "matched": tok})
            return True
        st.ids.append(tok)
        r.new_ids.append(tok)
        st.sampled += 1
        self._usage.generated_tokens += 1
        if r.chunks is not None:
            r.chunks.put(len(r.new_ids))
        reason: dict[str, Any] | str | None = None
        early = len(r.new_ids) < r.min_new_tokens
        if r.constraint is not None:
            r.constraint.accept(tok)
            if r.constraint.only_stop_left():
                reason = {"type": "stop", "matched": min(self.eos_ids, default=None)}
        elif tok in self.eos_ids and not r.ignore_eos and not early:
            reason = {"type": "stop", "matched": tok}
            st.finished = tok in self.eos_ids
        if reason is None and (r.stop or r.stop_regex) and not early:
            tail = self.tokenizer.decode(r.new_ids[-32:], skip_special_tokens=True)
            if any(x in tail for x in r.stop) or any(rx.search(tail) for rx in r.stop_regex):
                reason = "stop_str"
        if reason is None and len(r.new_ids) >= r.max_new_tokens:
            reason = "length"
        if reason is None:
            return False
        if row is not None:
            # keep the KV the batch computed for this row (all tokens but the one just sampled)
            st.past = self._batch.row_past(row)
        self._finish(r, reason)
        return True

    def _finish(self, r: GenRequest, reason: dict[str, Any] | str) -> None:
        st = r.state
        text = self.tokenizer.decode(r.new_ids, skip_special_tokens=True)
        if reason == "stop_str":
            hits = [(text.find(x), x) for x in r.stop if x in text]
            hits += [(m.start(), m.group(0)) for m in (rx.search(text) for rx in r.stop_regex) if m]
            cut, matched = min(hits) if hits else (len(text), None)
            text = self._truncate_to_text(r, text[:cut])
            reason = {"type": "stop", "matched": matched}
        elif reason == "length":
            reason = {"type": "length", "length": r.max_new_tokens}
        assert isinstance(reason, dict)
        st.finish_reason = reason["type"]
        r.final_text = text
        r.future.set_result((text, reason))
        if r.chunks is not None:
            r.chunks.put(None)

    def _truncate_to_text(self, r: GenRequest, text: str) -> str:
        """Drop sampled tokens past a stop string, so the branch's ids match the text the frontend keeps."""
        st = r.state
        keep, ids = realign(r.new_ids, text, self.tokenizer, lambda t: self._encode(t, first=False))
        base = len(st.ids) - (len(r.new_ids) - keep)
        st.ids = st.ids[:base] + ids[keep:]
        if st.kv_len > base:
            assert st.past is not None
            st.past = tuple((k[:, :, :base], v[:, :, :base]) for k, v in st.past)
            st.kv_len = base
        st.next_logits = None
        return text

    def _sample_rows(self, logits: torch.Tensor, rows: Sequence[GenRequest]) -> list[int]:
        """The next token of every row (a method, so a profiler can time it: ``bench.decode``)."""
        return sample_rows(logits, rows, self.eos_ids)
