"""Several SGLang workers as one sampling target: ``--server URL`` repeated, or ``--router URL``.

Each problem is pinned to ONE worker (rendezvous hash of a stable key: the problem's prompt), so its
branches, their STOP scores and a label prefix's K continuations all hit one radix cache; when a worker
is marked dead its problems move to the others and no other problem moves.

sglang-router 0.3.2 forwards ``/generate`` and ``/get_model_info`` but not ``/tokenize``, ``/stop/score``
or ``/stop/adapters`` (404), refuses a per-request list of ``sampling_params`` (422), and tells a client
neither which worker served a request nor lets it choose one (``x-smg-target-worker`` is ignored). So:
- label sends its ``/generate`` requests THROUGH the router with ``x-smg-routing-key: <problem>``, which
  its ``--policy manual`` keeps on one worker (other policies balance them as they like);
- the program (run, calibrate), which also needs ``/tokenize`` and ``/stop/score`` on the worker holding
  the branch, uses the router as the registry of workers (``GET /workers``) and pins problems itself.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from sglang_stop.backends.base import TokenUsage
from sglang_stop.backends.endpoint import CONNECT_TIMEOUT_S, POOL_SIZE, ServerError, StopEndpoint
from sglang_stop.errors import UserError

ROUTING_HEADER = "x-smg-routing-key"  # sglang-router's sticky key (policy "manual")


def check_url(flag: str, url: str) -> str:
    """``http(s)://HOST[:PORT]`` without a trailing slash, or a UserError naming ``flag``."""
    parts = urlsplit(url.strip())
    try:
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        parts = parts._replace(netloc="")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"{flag} {url[:200]!r}: expected a URL like http://HOST:PORT")
    return url.strip().rstrip("/")


def pick(key: str, workers: Sequence[str]) -> str:
    """Rendezvous hashing: stable per key; removing a worker moves only the keys it held."""
    return max(workers, key=lambda w: hashlib.blake2b(f"{w}|{key}".encode(), digest_size=8).digest())


def router_workers(router: str, timeout_s: float = 30.0) -> list[str]:
    """The healthy workers the router knows (``GET /workers``), or one ServerError line."""
    try:
        r = requests.get(router + "/workers", timeout=(CONNECT_TIMEOUT_S, timeout_s))
        body = r.json() if r.status_code == 200 else None
    except (requests.RequestException, ValueError) as e:
        raise ServerError(f"router {router}: GET /workers failed ({type(e).__name__}) — is it an sglang-router?"
                          ) from None
    if not isinstance(body, dict) or not isinstance(body.get("workers"), list):
        raise ServerError(f"router {router}: GET /workers: HTTP {r.status_code}, not an sglang-router reply")
    urls = [str(w["url"]) for w in body["workers"]
            if isinstance(w, dict) and w.get("url") and w.get("is_healthy", True)]
    if not urls:
        raise ServerError(f"router {router}: no healthy worker")
    return urls


@dataclass
class Fleet:
    """Where requests go: ``workers`` (pinned per key), and ``router`` when one fronts them."""

    workers: list[str]
    router: str | None = None
    dead: set[str] = field(default_factory=set)

    @classmethod
    def from_options(cls, servers: Sequence[str], router: str | None) -> Fleet | None:
        """None for an in-process run; the checked URLs otherwise (the router's workers asked now)."""
        if servers and router:
            raise UserError("--server and --router: give one (several --server URLs, or the router in front)")
        if router:
            url = check_url("--router", router)
            return cls(workers=router_workers(url), router=url)
        if not servers:
            return None
        urls = [check_url("--server", s) for s in servers]
        if len(set(urls)) != len(urls):
            raise UserError(f"--server: {sorted(u for u in urls if urls.count(u) > 1)[0]} given twice")
        return cls(workers=urls)

    def live(self) -> list[str]:
        alive = [w for w in self.workers if w not in self.dead]
        if not alive:
            raise ServerError(f"every worker failed ({', '.join(self.workers)})")
        return alive

    def worker_for(self, key: str) -> str:
        return pick(key, self.live())


class RoutingSession(requests.Session):
    """A session that adds the current thread's routing key (``routing_key``) to every request."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        key = getattr(self.local, "key", None)
        if key is not None:
            kwargs["headers"] = {**(kwargs.get("headers") or {}), ROUTING_HEADER: key}
        return super().request(method, url, *args, **kwargs)

    @contextmanager
    def routing_key(self, key: str) -> Iterator[None]:
        self.local.key = key
        try:
            yield
        finally:
            self.local.key = None


class WorkerEndpoint(StopEndpoint):
    """StopEndpoint for one worker or a router, over a :class:`RoutingSession` that retries once."""

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        session = RoutingSession()
        # One retry of a request whose pooled keep-alive connection the server had just closed (uvicorn
        # drops idle ones after 5 s: with several workers one sits idle while the others work). A crashed
        # server refuses the retry, which still ends in one line.
        retry = Retry(total=1, connect=0, read=1, status=0, other=0, allowed_methods=None, raise_on_status=False)
        for prefix in ("http://", "https://"):
            session.mount(prefix, HTTPAdapter(pool_maxsize=POOL_SIZE, max_retries=retry))
        super().__init__(base_url, session=session, **kwargs)
        self.routing = session


class FleetEndpoint:
    """The program's backend over several workers: each root branch (a problem's prompt) goes to the
    worker its text hashes to, and every branch forked from it follows; scores go to the branch's worker."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.endpoints = {w: WorkerEndpoint(w) for w in fleet.workers}
        self.first = self.endpoints[fleet.workers[0]]
        self._lock = threading.Lock()
        self._owner: dict[str, tuple[str, WorkerEndpoint]] = {}  # executor sid -> (text when first seen, endpoint)
        self._handles: dict[str, tuple[Any, WorkerEndpoint]] = {}  # executor sid -> (its Branch.handle, endpoint)

    def _endpoint(self, s: Any) -> WorkerEndpoint:
        exe = getattr(s, "stream_executor", s)
        with self._lock:
            got = self._owner.get(exe.sid)
            if got is None:
                parent = max((v for v in self._owner.values() if exe.text_.startswith(v[0])),
                             key=lambda v: len(v[0]), default=None)
                ep = parent[1] if parent is not None else self.endpoints[self.fleet.worker_for(exe.text_)]
                got = self._owner[exe.sid] = (exe.text_, ep)
            return got[1]

    # ---- what the interpreter and the program call with an executor ----
    def generate(self, s: Any, sampling_params: Any) -> Any:
        return self._endpoint(s).generate(s, sampling_params)

    def commit_lazy_operations(self, s: Any) -> None:
        self._endpoint(s).commit_lazy_operations(s)

    def bind_branch(self, exe: Any, *, index: int, seed: int) -> None:
        self._endpoint(exe).bind_branch(exe, index=index, seed=seed)

    def branch_view(self, exe: Any, index: int) -> Any:
        ep = self._endpoint(exe)
        view = ep.branch_view(exe, index)
        with self._lock:  # stop_score gets the handle back and must find its worker
            self._handles[getattr(exe, "stream_executor", exe).sid] = (view.handle, ep)
        return view

    def release(self, exe: Any) -> None:
        self._endpoint(exe).release(exe)
        sid = getattr(exe, "stream_executor", exe).sid
        with self._lock:
            self._owner.pop(sid, None)
            self._handles.pop(sid, None)

    def end_program(self, s: Any) -> None:
        for exe in s if isinstance(s, list) else [s]:
            self.release(exe)

    def stop_score(self, handles: Sequence[Any]) -> list[float]:
        """Each handle scored on the worker that holds it (one batched call per worker)."""
        with self._lock:
            known = list(self._handles.values())
        owner = [next((ep for k, ep in known if k is h), None) for h in handles]
        out: dict[int, float] = {}
        for ep in self.endpoints.values():
            mine = [i for i, o in enumerate(owner) if o is ep]
            if mine:
                out.update(zip(mine, ep.stop_score([handles[i] for i in mine])))
        if len(out) != len(handles):
            raise RuntimeError("stop_score: a branch handle no worker holds (released before scoring?)")
        return [out[i] for i in range(len(handles))]

    def check_stop_adapter(self) -> None:
        for ep in self.endpoints.values():
            ep.check_stop_adapter()

    def usage(self) -> TokenUsage:
        total = TokenUsage()
        for ep in self.endpoints.values():
            u = ep.usage()
            for k in type(u).model_fields:
                setattr(total, k, getattr(total, k) + getattr(u, k))
        return total

    def shutdown(self) -> None:
        for ep in self.endpoints.values():
            ep.shutdown()

    def __getattr__(self, name: str) -> Any:
        """Everything else (tokenizer, chat template, model name and info) is the same on every worker."""
        return getattr(self.__dict__["first"], name)


def program_backend(fleet: Fleet) -> Any:
    """One worker: its StopEndpoint; several (or a router's): a FleetEndpoint pinning problems."""
    if len(fleet.workers) == 1:
        return WorkerEndpoint(fleet.workers[0])
    return FleetEndpoint(fleet)
