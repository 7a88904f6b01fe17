"""What one HTTP request turns into: a validated per-request config, an admission slot, and one run
of the parallel-reasoning program (``runner.run_problems`` on a one-problem list) on the shared
backend, cancellable on its own.

Why a per-request backend view: ``run_problems`` cancels through ``backend.abort``, which on the
shared ``LocalBackend`` would fail every request's generation. Each request therefore runs on a
:class:`RequestBackend`, a thin proxy whose ``abort`` fails only this request's generate calls
(queued or decoding) and whose ``resume_requests`` lifts nothing global. The proxy also counts the
request's live paths and sampled tokens for the stream's progress events.

The prompt reaches the program as given (chat: the messages through the model's chat template;
completions: the prompt text), with the problem key `sglang-stop run --question` uses, so a request
samples exactly the paths `run --question` does for the same prompt, config and seed.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sglang_stop.backends.base import BranchAbortBackend
from sglang_stop.config import RuntimeConfig, config_from_dict
from sglang_stop.errors import RunCancelled, RunInterrupted, UserError
from sglang_stop.tasks import QUESTION_ID
from sglang_stop.runner import ProblemResult, context_window, run_problems
from sglang_stop.scorers import Scorer, make_scorer, scorer_class
from sglang_stop.serve.schemas import ChatRequest, CompletionRequest, PathInfo, StopUsage, Usage, _Request
from sglang_stop.tasks import Problem, Task, UngradedTask

# Config sections a request may not override, and why (the answer would silently not be what it asked).
FIXED = {
    "model": "the served model is fixed when the server starts",
    "task": "the answer format (task) is fixed when the server starts",
    "prompt": "the request's messages/prompt are the prompt; no task template is applied",
    "chat_template": "chat requests always use the model's chat template, completions never",
    "schema_version": "set by the server",
    "metadata": "not used by a request",
}
OPENAI_FIELDS = {"temperature": ("sampling", "temperature"), "top_p": ("sampling", "top_p"),
                 "max_tokens": ("sampling", "max_new_tokens"), "seed": ("seed",)}
KILL_RETRY_S = 0.02  # how often a cancel re-checks for generate calls of the request still in the backend
KILL_FOR_S = 2.0


class ServeError(Exception):
    """A request the server refuses: HTTP ``status`` and one message naming the field."""

    def __init__(self, message: str, status: int = 400, param: str | None = None,
                 headers: dict[str, str] | None = None, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.param, self.headers, self.kind = status, param, headers or {}, kind


class RawPromptTask(UngradedTask):
    """The served task's answer extraction, with the request's text as the whole prompt."""

    chat_template = False

    def __init__(self, task: Task) -> None:
        super().__init__(task)
        self.chat_template = False

    def format_prompt(self, question: str, prompt: str | None = None) -> str:
        return question


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Nested dicts merge; any other value (a list of stages) replaces."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def merged_config(base: RuntimeConfig, req: _Request) -> RuntimeConfig:
    """The server's config with the request's ``sglang_stop`` overrides and OpenAI sampling fields,
    validated as one by the runtime's schema (a bad value is a ServeError naming the field)."""
    data = base.model_dump(mode="json")
    over = dict(req.sglang_stop or {})
    for key in over:
        if key in FIXED:
            raise ServeError(f"sglang_stop.{key}: cannot be set per request ({FIXED[key]})", param=f"sglang_stop.{key}")
    sc = over.pop("scorer", None)
    if sc is not None:
        if isinstance(sc, str):
            sc = {"name": sc}
        if not isinstance(sc, dict):
            raise ServeError("sglang_stop.scorer: expected a scorer name or {name, options}", param="sglang_stop.scorer")
        if "checkpoint" in (sc.get("options") or {}):
            raise ServeError("sglang_stop.scorer.options.checkpoint: the STOP checkpoint is the server's "
                             "(its config), not a request's", param="sglang_stop.scorer.options.checkpoint")
        name = sc.get("name", data["scorer"]["name"])
        data["scorer"] = _merge(data["scorer"], sc) if name == data["scorer"]["name"] else {"options": {}, **sc}
        if isinstance(name, str) and "stages" not in over:
            try:
                if not scorer_class(name).prunes:
                    data["stages"] = []  # the server's prune points are not this request's: `none` never prunes
            except UserError as e:
                raise ServeError(f"sglang_stop.scorer.name: {e}", param="sglang_stop.scorer.name") from None
    data = _merge(data, over)
    for fld, path in OPENAI_FIELDS.items():
        value = getattr(req, fld)
        if value is None:
            continue
        node = data
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
    mt = getattr(req, "max_completion_tokens", None)
    if mt is not None:
        if req.max_tokens is not None and req.max_tokens != mt:
            raise ServeError("max_completion_tokens: differs from max_tokens; give one", param="max_completion_tokens")
        data["sampling"]["max_new_tokens"] = mt
    if req.stop is not None:
        data["sampling"]["stop"] = [req.stop] if isinstance(req.stop, str) else list(req.stop)
    data["chat_template"], data["prompt"] = False, None  # the request's text is the prompt (RawPromptTask)
    try:
        cfg = config_from_dict(data, "sglang_stop")
        make_scorer(cfg.scorer.name, cfg.scorer.options)
    except UserError as e:
        msg = str(e)
        if "max_new_tokens" in msg and (req.max_tokens is not None or mt is not None):
            msg += " (max_tokens sets sampling.max_new_tokens)"
        raise ServeError(msg) from None
    return cfg


class RequestBackend:
    """One request's view of the shared backend: everything delegates, except that ``abort`` fails
    only this request's generate calls and ``resume_requests`` is a no-op (nothing global was set)."""

    def __init__(self, inner: Any, on_generate: Callable[[int], None] | None = None) -> None:
        self._inner = inner
        # LocalBackend: its branch_view reads a branch without syncing it, so progress can show tokens
        # mid-segment, and it can drop this request's rows. StopEndpoint syncs in branch_view (only the
        # program may call it), so there progress counts finished generate calls.
        self._local = isinstance(inner, BranchAbortBackend)
        self._execs: dict[str, Any] = {}  # sid -> executor, for every branch this request generated on
        self._done_tokens: dict[str, int] = {}  # sid -> tokens of its finished generate calls
        self._ended: set[str] = set()
        self._inflight = 0
        self._lock = threading.Lock()
        self._cancelled: BaseException | None = None
        self._on_generate = on_generate

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def generate(self, s: Any, sampling_params: Any) -> Any:
        if self._cancelled is not None:
            raise RunCancelled("request cancelled")
        with self._lock:
            self._execs[s.sid] = s
            self._inflight += 1
        if self._on_generate:
            self._on_generate(1)
        try:
            text, meta = self._inner.generate(s, sampling_params)
            with self._lock:
                self._done_tokens[s.sid] = self._done_tokens.get(s.sid, 0) + int(meta.get("completion_tokens", 0))
            return text, meta
        finally:
            with self._lock:
                self._inflight -= 1
            if self._on_generate:
                self._on_generate(-1)

    def end_program(self, s: Any) -> None:
        with self._lock:
            self._ended.update(exe.sid for exe in (s if isinstance(s, list) else [s]))
        self._inner.end_program(s)

    def progress(self) -> dict[str, int]:
        """Live paths of this request and the tokens sampled so far (a snapshot)."""
        with self._lock:
            execs = [(sid, exe) for sid, exe in self._execs.items() if sid not in self._ended]
            tokens = dict(self._done_tokens)
        if self._local:
            for sid, exe in execs:
                try:
                    tokens[sid] = max(tokens.get(sid, 0), self._inner.branch_view(exe, 0).sampled)
                except KeyError:  # released meanwhile
                    pass
        return {"paths_running": len(execs), "tokens_sampled": sum(tokens.values())}

    def abort(self, err: BaseException) -> None:
        """Fail this request's generate calls now and any it starts later; other requests go on."""
        self._cancelled = err
        if self._local:
            threading.Thread(target=self._kill_local, name="sglang-stop-serve-cancel", daemon=True).start()

    def resume_requests(self) -> None:
        """Nothing global to lift: the abort was this request's only."""

    def _kill_local(self) -> None:
        """Fail and drop this request's rows in the backend (decoding or just admitted), repeating
        until none of its generate calls is left there (a gen admitted after one pass: the next)."""
        sids = set(self._execs)
        deadline = time.monotonic() + KILL_FOR_S
        while time.monotonic() < deadline:
            try:
                self._inner.abort_branches(sids, RunCancelled("request cancelled"))
            except Exception:  # noqa: BLE001 - a backend shutting down: nothing left to cancel
                return
            with self._lock:
                if self._inflight == 0:
                    return
            time.sleep(KILL_RETRY_S)


class TimedScorer:
    """The request's scorer, timing each ``score`` call (the /metrics scoring time)."""

    def __init__(self, inner: Scorer, on_time: Callable[[float], None]) -> None:
        self._inner, self._on_time = inner, on_time
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def score(self, branches: Any, ctx: Any) -> list[float]:
        t0 = time.perf_counter()
        try:
            return self._inner.score(branches, ctx)
        finally:
            self.calls += 1
            self._on_time(time.perf_counter() - t0)


@dataclass
class Job:
    """A validated request, ready to run."""

    prompt: str
    prompt_tokens: int
    cfg: RuntimeConfig
    backend: RequestBackend
    scorer: TimedScorer
    slot: int  # index of the server (backend) it runs on
    cancel: threading.Event = field(default_factory=threading.Event)

    def progress(self) -> dict[str, Any]:
        return {"paths_launched": self.cfg.n, "prune_points_scored": self.scorer.calls, **self.backend.progress()}


@dataclass
class Stats:
    """Counters the engine keeps; ``metrics.Metrics`` exports them."""

    on_scoring: Callable[[float], None] = lambda s: None
    on_generate: Callable[[int], None] = lambda d: None


class Engine:
    """The served config, backend(s) and task; admits requests up to ``max_concurrent``."""

    def __init__(self, cfg: RuntimeConfig, backends: list[Any], task: Task, *, max_concurrent: int = 32,
                 retry_after_s: int = 1, stats: Stats | None = None, model_name: str | None = None) -> None:
        if not backends:
            raise UserError("serve: no backend")
        if max_concurrent < 1:
            raise UserError(f"--max-concurrent: must be >= 1, got {max_concurrent}")
        self.cfg, self.backends, self.task = cfg, backends, task
        self.raw_task = RawPromptTask(task)
        self.max_concurrent, self.retry_after_s = max_concurrent, retry_after_s
        self.stats = stats or Stats()
        names = sorted({b.get_model_name() for b in backends})
        if len(names) > 1:
            raise UserError(f"--server: the servers serve different models ({', '.join(names)}); one request's "
                            "paths may go to any of them, so they must serve the same one")
        self.model_name = model_name or names[0]
        self._lock = threading.Lock()
        self._active = [0] * len(backends)
        self._scorers: dict[tuple[str, str], Scorer] = {}
        self.prepare_scorer(cfg, 0)  # a bad checkpoint fails at start, not on the first request

    @property
    def in_flight(self) -> int:
        with self._lock:
            return sum(self._active)

    def live_branches(self) -> int:
        return sum(b.live_branches() for b in self.backends if hasattr(b, "live_branches"))

    def max_batch_seen(self) -> int:
        return max((getattr(b, "max_batch_seen", 0) for b in self.backends), default=0)

    def prepare_scorer(self, cfg: RuntimeConfig, slot: int) -> Scorer:
        key = (cfg.scorer.name, json.dumps(cfg.scorer.options, sort_keys=True, default=str))
        with self._lock:
            sc = self._scorers.get(key)
            if sc is None:
                sc = self._scorers[key] = make_scorer(cfg.scorer.name, cfg.scorer.options)
        sc.prepare(self.backends[slot])
        return sc

    def acquire(self) -> int:
        """A slot (the least busy server), or a 429 when ``max_concurrent`` requests are running.
        Held until the request's run has ended (:meth:`release`), not merely until it answered."""
        with self._lock:
            if sum(self._active) >= self.max_concurrent:
                raise ServeError(f"server busy: {self.max_concurrent} requests running (the limit); retry later",
                                 status=429, headers={"Retry-After": str(self.retry_after_s)}, kind="rate_limit_error")
            slot = min(range(len(self._active)), key=lambda i: self._active[i])
            self._active[slot] += 1
            return slot

    def release(self, slot: int) -> None:
        with self._lock:
            self._active[slot] -= 1

    def chat_prompt(self, req: ChatRequest, slot: int) -> str:
        """The messages through the model's chat template; a model without one gets the contents
        joined by blank lines (the testbed)."""
        try:
            msgs = [{"role": m.role, "content": m.text()} for m in req.messages]
        except ValueError as e:
            raise ServeError(f"messages: {e}", param="messages") from None
        tok = self.backends[slot].tokenizer
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in msgs)

    def prepare(self, req: ChatRequest | CompletionRequest, slot: int) -> Job:
        """Everything checkable before decoding: model name, config, scorer, prompt length."""
        if req.model is not None and req.model != self.model_name:
            raise ServeError(f"model: {req.model!r} is not served here (GET /v1/models: {self.model_name!r})",
                             status=404, param="model", kind="not_found_error")
        cfg = merged_config(self.cfg, req)
        prompt = self.chat_prompt(req, slot) if isinstance(req, ChatRequest) else req.text()
        if not prompt.strip():
            raise ServeError("messages: the prompt is empty", param="messages")
        backend = self.backends[slot]
        n_prompt = len(backend.tokenizer(prompt, add_special_tokens=True)["input_ids"])
        window = context_window(backend)
        if window is not None and n_prompt + cfg.sampling.max_new_tokens > window:
            raise ServeError(f"prompt: {n_prompt} tokens + max_tokens {cfg.sampling.max_new_tokens} exceed the "
                             f"model's context window ({window} tokens)", param="prompt")
        try:
            scorer = self.prepare_scorer(cfg, slot)
        except UserError as e:
            raise ServeError(f"request: {e}") from None
        return Job(prompt=prompt, prompt_tokens=n_prompt, cfg=cfg,
                   backend=RequestBackend(backend, self.stats.on_generate),
                   scorer=TimedScorer(scorer, self.stats.on_scoring), slot=slot)

    def run(self, job: Job) -> ProblemResult:
        """Run the program; RunInterrupted when ``job.cancel`` was set (the client went away)."""
        problem = Problem(id=QUESTION_ID, question=job.prompt, answer="", source=self.task.spec)
        (res,), _ = run_problems(job.backend, self.raw_task, [problem], job.cfg, concurrency=1,
                                 scorer=job.scorer, cancel=job.cancel)  # type: ignore[arg-type]
        return res


def chosen_path(res: ProblemResult) -> int | None:
    """The best-scored voting path that gave the voted answer (first by index among unscored)."""
    voters = [p for p in res.paths if p.votes]
    pool = [p for p in voters if p.answer == res.predicted] or voters or res.paths
    if not pool:
        return None
    best = max(pool, key=lambda p: (p.scores[-1] if p.scores else float("-inf"), -p.index))
    return best.index


def usage_of(res: ProblemResult, job: Job) -> Usage:
    """OpenAI usage (completion = every sampled token of every path) with the STOP extension."""
    voters = [p for p in res.paths if p.votes]
    mean_len = sum(p.tokens for p in voters) / len(voters) if voters else 0.0
    voted = {p.index for p in voters}
    unpruned = sum(p.tokens if p.index in voted else max(p.tokens, round(mean_len)) for p in res.paths)
    ext = StopUsage(
        paths_launched=len(res.paths),
        paths_pruned=sum(p.pruned_at is not None for p in res.paths),
        paths_stopped_by_consensus=sum(p.stopped_by_consensus for p in res.paths),
        tokens_unpruned_estimate=unpruned,
        tokens_saved_estimate=unpruned - res.tokens,
        answer=res.predicted,
        votes=res.votes,
        chosen_path=chosen_path(res),
        paths=[PathInfo(index=p.index, answer=p.answer, tokens=p.tokens, scores=p.scores, pruned_at=p.pruned_at,
                        stopped_by_consensus=p.stopped_by_consensus, finished=p.finished) for p in res.paths],
        scorer=job.cfg.scorer.name,
        stages=[s.model_dump(exclude_none=True) for s in job.cfg.stages],
    )
    return Usage(prompt_tokens=job.prompt_tokens, completion_tokens=res.tokens,
                 total_tokens=job.prompt_tokens + res.tokens, sglang_stop=ext)


def answer_text(res: ProblemResult) -> tuple[str, str]:
    """The message content and finish reason: the chosen path's text; "stop" if it ended, else "length"."""
    i = chosen_path(res)
    path = next((p for p in res.paths if p.index == i), None)
    if path is None:
        return "", "stop"
    return path.text, "stop" if path.finished else "length"


__all__ = ["Engine", "Job", "RequestBackend", "RunInterrupted", "ServeError", "Stats", "answer_text",
           "merged_config", "usage_of"]
