"""``StopEndpoint``: sglang's ``RuntimeEndpoint`` for a real SGLang server running the sglang_stop plugin.

Stock ``RuntimeEndpoint.generate`` sends each branch's TEXT, so the server re-tokenises it; a re-tokenised
branch rarely matches its own cached KV (measured: 8-11 of 17-24 prefix tokens reused). This subclass
keeps every branch's token ids and sends ``input_ids``: only text the program appends is tokenised (by
the server's /tokenize, so ids are the server's own). It adds the ``PathBackend`` protocol the program
needs and ``stop_score(handles)``, which commits each branch's ids (prefill-only) and calls /stop/score.

Every HTTP failure (refused or dropped connection, timeout, an error reply) becomes ONE ``ServerError``
(a ``UserError``) naming the server and what happened, so a run against a server that died ends with one
line instead of client tracebacks; every request has a timeout, so none waits forever.
"""

from __future__ import annotations

import math
import socket
import threading
from collections.abc import Iterator, Sequence
from http.client import RemoteDisconnected
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from sglang.lang.backend.base_backend import BaseBackend
from sglang.lang.backend.runtime_endpoint import RuntimeEndpoint
from sglang.lang.chat_template import get_chat_template, get_chat_template_by_model_path

from sglang_stop.backends.base import Branch, TokenUsage
from sglang_stop.backends.branches import BranchState, BranchTracker, realign
from sglang_stop.errors import UserError

__all__ = ["BranchState", "ServerError", "StopEndpoint"]

TOP_LOGPROBS = 20  # as LocalBackend records; confidence-style scorers read them
CONNECT_TIMEOUT_S = 10.0  # a loopback/LAN server accepts in milliseconds; longer means a wrong address
ECHO_CHARS = 200  # the most of a server's reply an error message repeats
POOL_SIZE = 256


class ServerError(UserError):
    """The server failed a request; ``status`` is the HTTP status (0: no reply at all)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class StopEndpoint(RuntimeEndpoint):
    def __init__(
        self,
        base_url: str,
        *,
        adapter: str = "stop",
        timeout_s: float = 600.0,
        api_key: str | None = None,
        chat_template_name: str | None = None,
        session: requests.Session | None = None,
    ) -> None:
        """Asks the server for its model (with a timeout; RuntimeEndpoint's own request has none).
        ``session``: the caller's HTTP session (e.g. one that adds a router's routing header, or retries)."""
        BaseBackend.__init__(self)
        self.support_concate_and_append = True
        self.base_url, self.api_key, self.verify = _check_url(base_url), api_key, None
        self.timeout_s = timeout_s
        self.adapter = adapter
        self._session = session if session is not None else requests.Session()
        if session is None:
            # A keep-alive connection per concurrent branch (n x concurrency threads): past urllib3's default
            # pool of 10, requests would open a fresh connection and discard it after the reply.
            self._session.mount("http://", HTTPAdapter(pool_maxsize=POOL_SIZE))
            self._session.mount("https://", HTTPAdapter(pool_maxsize=POOL_SIZE))
        self._lock = threading.Lock()
        self._branches: BranchTracker[BranchState] = BranchTracker(BranchState)
        self._tokenizer: Any = None
        self._usage = TokenUsage()
        self.model_info = self._model_info()
        self.chat_template = (
            get_chat_template(chat_template_name)
            if chat_template_name
            else get_chat_template_by_model_path(self.model_info["model_path"])
        )

    # ---- HTTP ----
    def _model_info(self) -> dict[str, Any]:
        """GET /get_model_info, telling an unreachable server from a reachable one that is not SGLang."""
        not_sglang = f"server {self.base_url}: not an SGLang server (GET /get_model_info"
        try:
            info = self._request("GET", "/get_model_info", connecting=True)
        except ServerError as e:
            if e.status == 404:
                raise ServerError(f"{not_sglang}: HTTP 404)", 404) from None
            if e.status == 200:
                raise ServerError(f"{not_sglang}: the reply is not JSON)", 200) from None
            raise  # no reply, or an SGLang error such as 401 (an API key is needed): as it is
        if not isinstance(info, dict) or not isinstance(info.get("model_path"), str):
            raise ServerError(f"{not_sglang} has no model_path)")
        return info

    def _request(self, method: str, path: str, body: Any = None, *, connecting: bool = False) -> Any:
        """One request with connect and read timeouts; any failure -> ServerError naming the server."""
        where = f"server {self.base_url}"
        what = f"{method} {path}"
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            r = self._session.request(method, self.base_url + path, json=body, headers=headers,
                                      timeout=(CONNECT_TIMEOUT_S, self.timeout_s))
        except requests.ConnectTimeout:
            raise ServerError(f"{where}: cannot connect: no answer within {CONNECT_TIMEOUT_S:.0f}s ({what}) "
                              "— is the address right?") from None
        except requests.ReadTimeout:
            raise ServerError(f"{where}: no reply to {what} within {self.timeout_s:g}s — is the server stuck?"
                              ) from None
        except requests.ConnectionError as e:
            raise ServerError(f"{where}: {_connection_failure(e, what, connecting)}") from None
        except requests.RequestException as e:
            raise ServerError(f"{where}: {what} failed: {_clip(str(e))}") from None
        if r.status_code != 200:
            raise ServerError(f"{where}: {what}: HTTP {r.status_code}: {_reply_message(r)}", r.status_code)
        try:
            return r.json()
        except ValueError:
            raise ServerError(f"{where}: {what}: the reply is not JSON: {_clip(r.text)!r}", r.status_code) from None

    def post(self, path: str, body: dict[str, Any]) -> Any:
        """One POST with the endpoint's timeouts; any failure is one ServerError line naming the server."""
        return self._request("POST", path, body)

    def check_stop_adapter(self) -> None:
        """Before decoding: the server runs the sglang-stop plugin and holds the STOP adapter ``adapter``."""
        try:
            out = self._request("GET", "/stop/adapters")
        except ServerError as e:
            if e.status != 404:
                raise
            raise ServerError(f"server {self.base_url}: no /stop/adapters route: the server lacks the sglang-stop "
                              "plugin (install sglang-stop in the server's environment)", 404) from None
        names = sorted(str(a.get("name")) for a in out.get("adapters") or [] if isinstance(a, dict))
        if self.adapter not in names:
            raise ServerError(f"server {self.base_url}: no STOP adapter {self.adapter!r} (it has "
                              f"{names or 'none'}; start it with --enable-lora --lora-paths {self.adapter}=DIR)")

    def tokenize(self, text: str, *, add_special_tokens: bool) -> list[int]:
        if not text:
            return []
        out = self.post("/tokenize", {"prompt": text, "add_special_tokens": add_special_tokens})
        return list(out["tokens"])

    # ---- per-branch token ids ----
    def _state(self, s: Any) -> BranchState:
        """The executor's state, brought up to date with text the program appended since last time."""
        return self._branches.state_for(_executor(s), lambda text, first: self.tokenize(text, add_special_tokens=first))

    def commit_lazy_operations(self, s: Any) -> None:
        """Called by ``fork``: the parent's ids reach the server's cache once, and its children start from them."""
        st = self._state(s)
        if st.ids:
            self._commit([st.ids])
        self._branches.commit(_executor(s), st)

    def _commit(self, batch: list[list[int]]) -> None:
        # One sampling_params object for the whole batch (SGLang applies it to every request; a router
        # refuses a per-request list).
        self.post("/generate", {"input_ids": batch, "sampling_params": {"max_new_tokens": 0}})

    def generate(self, s: Any, sampling_params: Any):
        self._handle_dtype_to_regex(sampling_params)
        st = self._state(s)
        if st.finished:
            return "", {"completion_tokens": 0, "finish_reason": {"type": st.finish_reason}, "cached_tokens": 0}
        known, first = len(st.ids), not st.sampled
        sp = {**sampling_params.to_srt_kwargs()}
        if st.seed is not None and sp.get("temperature", 1.0) > 0:
            sp["sampling_seed"] = st.seed
        body = {
            "input_ids": st.ids,
            "sampling_params": sp,
            "return_logprob": True,
            "top_logprobs_num": TOP_LOGPROBS,
            "logprob_start_len": -1,
        }
        obj = self.post("/generate", body)
        if not isinstance(obj, dict) or not isinstance(obj.get("meta_info"), dict) or "text" not in obj:
            raise ServerError(f"server {self.base_url}: POST /generate: not an SGLang reply: {_clip(str(obj))}")
        meta = obj["meta_info"]
        text = obj["text"]
        out_ids = list(obj.get("output_ids") or [])
        reason = meta.get("finish_reason") or {}
        matched = reason.get("matched")
        if isinstance(matched, str):  # a stop string: the server trimmed the text, not the ids
            out_ids = realign(out_ids, text, self.tokenizer, lambda t: self.tokenize(t, add_special_tokens=False))[1]
        elif reason.get("type") == "stop":
            st.finished = True
        st.finish_reason = reason.get("type")
        st.ids += out_ids
        st.text = s.text_ + text
        st.sampled += len(obj.get("output_ids") or [])
        st.logprobs += [float(t[0]) for t in meta.get("output_token_logprobs") or []][: len(out_ids)]
        tops = [[float(x[0]) for x in row or []] for row in meta.get("output_top_logprobs") or []][: len(out_ids)]
        st.top_logprobs += tops
        st.entropies += [_topk_entropy(r) for r in tops]
        cached = int(meta.get("cached_tokens", 0))
        with self._lock:
            u = self._usage
            u.generated_tokens += len(obj.get("output_ids") or [])
            u.forward_tokens += max(0, known - cached) + len(out_ids)
            if first:
                u.prompt_tokens += max(0, known - cached)
            else:  # all but the last sampled token already had KV in this branch
                u.reencoded_tokens += max(0, (known - 1) - cached)
        return text, meta

    @property
    def tokenizer(self) -> Any:
        """The served model's tokenizer (chat template, decoding), loaded from the path the server reports."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            path = self.model_info.get("tokenizer_path") or self.model_info["model_path"]
            try:
                self._tokenizer = AutoTokenizer.from_pretrained(path)
            except Exception as e:
                raise UserError(
                    f"server {self.base_url}: cannot load its tokenizer {path!r} here: {_clip(str(e))}"
                ) from None
        return self._tokenizer

    def end_program(self, s: Any) -> None:
        for exe in s if isinstance(s, list) else [s]:
            self.release(exe)

    def shutdown(self) -> None:
        self._session.close()

    # ---- PathBackend ----
    def bind_branch(self, exe: Any, *, index: int, seed: int) -> None:
        self._branches.bind(_executor(exe), index, seed)

    def branch_view(self, exe: Any, index: int) -> Branch:
        """The branch synced with its executor's text (so only the program, between gens, calls it)."""
        return self._state(exe).view(index, self.tokenizer)

    def release(self, exe: Any) -> None:
        """Forget the branch; its KV stays in the radix cache as evictable (LRU) until memory is needed."""
        self._branches.release(_executor(exe))

    def usage(self) -> TokenUsage:
        with self._lock:
            return self._usage.model_copy()

    # ---- STOP scoring ----
    def stop_score(self, handles: Sequence[BranchState]) -> list[float]:
        """One batched /stop/score call; each branch's ids are committed (prefill-only) first."""
        batch = [list(h.ids) for h in handles]
        if not batch:
            return []
        self._commit(batch)
        try:
            out = self.post("/stop/score", {"input_ids": batch, "adapter": self.adapter, "commit": False})
        except ServerError as e:
            if e.status != 409:  # 409: a prefix was evicted since our commit; let the server commit it
                raise
            out = self.post("/stop/score", {"input_ids": batch, "adapter": self.adapter, "commit": True})
        with self._lock:
            self._usage.forward_tokens += out["num_stop_tokens"] * len(batch)
        return [float(x) for x in out["scores"]]


def _check_url(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"--server {_clip(url)!r}: expected a URL like http://HOST:PORT")
    try:
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        raise UserError(f"--server {_clip(url)!r}: bad port (expected http://HOST:PORT)") from None
    return url.strip().rstrip("/")


def _clip(text: str) -> str:
    """One line of at most ``ECHO_CHARS`` (server messages may be huge or hold a traceback)."""
    text = " ".join(text.split())
    return text if len(text) <= ECHO_CHARS else f"{text[:ECHO_CHARS]}... ({len(text)} chars)"


def _causes(e: BaseException) -> Iterator[BaseException]:
    """``e`` and what it wraps (requests -> urllib3 -> OSError), bounded: chains are a few links long."""
    seen: list[BaseException] = []
    todo = [e]
    while todo and len(seen) < 20:
        x = todo.pop()
        if any(x is y for y in seen):
            continue
        seen.append(x)
        yield x
        todo += [a for a in (*x.args, getattr(x, "reason", None), x.__cause__, x.__context__)
                 if isinstance(a, BaseException)]


def _connection_failure(e: requests.ConnectionError, what: str, connecting: bool) -> str:
    """Refused / unknown host / dropped, in words, for a first contact or a request in the middle of a run."""
    causes = list(_causes(e))
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        return ("cannot connect: connection refused — is the server running?" if connecting
                else f"{what}: connection refused — the server stopped during the run")
    if any(isinstance(c, socket.gaierror) for c in causes):
        return "cannot connect: unknown host"
    if any(isinstance(c, (ConnectionResetError, RemoteDisconnected, BrokenPipeError)) for c in causes):
        return f"{what}: the server closed the connection without replying — did it crash? (see its log)"
    return f"{'cannot connect' if connecting else what}: {_clip(str(e))}"


def _reply_message(r: requests.Response) -> str:
    """The message of an error reply (sglang's and the plugin's JSON shapes), else its text; clipped."""
    try:
        obj = r.json()
    except ValueError:
        return _clip(r.text.strip()) or r.reason or "no message"
    if isinstance(obj, dict):
        err = obj.get("error")
        msg = err.get("message") if isinstance(err, dict) else obj.get("message") or obj.get("detail") or err
        if msg is not None:
            return _clip(str(msg))
    return _clip(str(obj))


def _executor(x: Any) -> Any:
    """Accept a ``ProgramState`` (what an @sgl.function sees) or its ``StreamExecutor``."""
    return getattr(x, "stream_executor", x)


def _topk_entropy(top: list[float]) -> float:
    """Entropy (nats) of the top-k distribution renormalised: the server returns only the top logprobs."""
    if not top:
        return 0.0
    m = max(top)
    ps = [math.exp(x - m) for x in top]
    z = sum(ps)
    return -sum(p / z * math.log(p / z) for p in ps if p > 0)
