"""HTTP routes added to sglang's own FastAPI app: ``POST /stop/score`` and ``GET /stop/adapters``.

/stop/score runs two ordinary batched requests through sglang's TokenizerManager, so the real scheduler,
radix cache and LoRA manager do the work:

1. commit: every prefix as a base-model, prefill-only request (``max_new_tokens=0``), so its KV is in
   the base namespace of the radix cache (a no-op beyond one token when the caller committed already);
2. score: ``prefix + [STOP]*k`` with the STOP adapter, ``return_hidden_states="last"`` (one row per
   request, not one per token), and the internal key that makes the plugin match the base prefix (see
   plugin.py). The final-norm hidden state of the last [STOP] token goes through the classifier head,
   held here: ``softmax(W h + b)[1]``.

With ``--dp-size > 1`` both requests carry one ``routed_dp_rank``: the caller's (the rank its /generate
calls for these branches used, so their KV is reused), else one the route picks from the first prefix.
A commit on one replica and a score on another would find nothing cached.

If the prefix was evicted between the two steps, the score would be computed over LoRA-made prefix KV;
``cached_tokens`` reveals it and the pair is retried once, then refused with 503.

The body is read and validated here, not by FastAPI: FastAPI's validation error (which sglang's handler
returns verbatim) echoes the whole input and names our source file and line, so a 10 MB bad body got a
20 MB reply. Here the body is capped (413), validated strictly (no ``true`` for an id, no ``"yes"`` for a
flag) and every error reply is one short message naming the field, with at most ``ECHO_CHARS`` of input.
"""

from __future__ import annotations

import logging
import zlib
from http import HTTPStatus
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sglang_stop.srt import state

try:
    from fastapi import Request
except ImportError:  # the frontend venv has no server deps; routes only run inside the server
    Request = Any  # type: ignore[assignment,misc]

logger = logging.getLogger(__name__)

MAX_BATCH = 1024
MAX_BODY_BYTES = 128 << 20  # ~20M token ids: far above any scoring batch, far below a memory problem
ECHO_CHARS = 200  # the most of any client-sent value an error reply repeats
MAX_MESSAGE_CHARS = 1000


class ScoreRequest(BaseModel):
    """Strict: JSON ``true``/``1.0``/``"3"`` are not token ids and ``"yes"``/``1`` are not a ``commit`` flag."""

    model_config = ConfigDict(extra="forbid", strict=True)

    input_ids: list[list[int]] = Field(..., description="one token-id list per prefix (prompt + generated)")
    adapter: str = Field("stop", description="name of a STOP adapter given to --lora-paths")
    commit: bool = Field(True, description="commit each prefix with a base prefill-only request first")
    routed_dp_rank: int | None = Field(
        None, ge=0, description="data-parallel replica for the commit and the score (--dp-size > 1): the one the "
        "branches' /generate calls were routed to",
    )


class ScoreResponse(BaseModel):
    scores: list[float] = Field(..., description="p(path ends correct), one per prefix")
    cached_tokens: list[int] = Field(..., description="prefix tokens the scoring request reused from cache")
    num_stop_tokens: int


class AdapterInfo(BaseModel):
    name: str
    path: str
    stop_token_id: int
    num_stop_tokens: int


class ScoreError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def clip(text: str, limit: int = ECHO_CHARS) -> str:
    """``text`` on one line, cut to ``limit`` chars, saying how long it was: replies never echo a whole input."""
    text = " ".join(text.split())
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def _error(status: int, message: str):
    from fastapi.responses import ORJSONResponse

    return ORJSONResponse({"error": {"message": clip(message, MAX_MESSAGE_CHARS), "code": status}},
                          status_code=status)


def _loc(loc: tuple[Any, ...]) -> str:
    """('input_ids', 3, 0) -> 'input_ids[3][0]'; () (the body itself) -> 'body'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{clip(str(part))}" if out else clip(str(part)))
    return out or "body"


def validation_message(err: ValidationError) -> str:
    """The first error as ``field: what is wrong`` (no input echo, no source location), and how many more."""
    errs = err.errors(include_url=False, include_input=False, include_context=False)
    first = errs[0]
    more = f" (and {len(errs) - 1} more errors)" if len(errs) > 1 else ""
    return f"{_loc(tuple(first['loc']))}: {clip(str(first['msg']))}{more}"


async def _read_body(request: Any) -> bytes:
    """The raw body, refused (413) past ``MAX_BODY_BYTES`` without reading the rest."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ScoreError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                         f"body: {int(declared)} bytes exceed the limit {MAX_BODY_BYTES}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ScoreError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body: more than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def parse_score_request(request: Any) -> ScoreRequest:
    """The validated body, or a 400/413 ScoreError with a one-line, bounded message."""
    try:
        return ScoreRequest.model_validate_json(await _read_body(request))
    except ValidationError as e:
        raise ScoreError(HTTPStatus.BAD_REQUEST, validation_message(e)) from None


def _tokenizer_manager() -> Any:
    from sglang.srt.entrypoints import http_server

    gs = http_server.get_global_state()
    if gs is None:
        raise ScoreError(HTTPStatus.SERVICE_UNAVAILABLE, "server is not ready")
    return gs.tokenizer_manager


def _resolve_adapter(tm: Any, name: str) -> tuple[Any, torch.Tensor, torch.Tensor]:
    refs = state.refresh_from_registry(tm)
    stop_names = sorted(n for n, r in refs.items() if r.lora_path and state.note_adapter_path(r.lora_path))
    if name not in refs:
        raise ScoreError(
            HTTPStatus.NOT_FOUND,
            f"adapter: unknown adapter {clip(name)!r}; STOP adapters on this server: "
            f"{stop_names or 'none (start with --lora-paths)'}",
        )
    entry = state.note_adapter_path(refs[name].lora_path)
    if entry is None:
        raise ScoreError(
            HTTPStatus.BAD_REQUEST,
            f"adapter: {clip(name)!r} is not a STOP adapter (no stop/config.json); convert the checkpoint with "
            "`python -m sglang_stop.srt.convert`",
        )
    return entry


def _validate_ids(tm: Any, batch: list[list[int]], k: int, vocab: int) -> None:
    if not batch:
        raise ScoreError(HTTPStatus.BAD_REQUEST, "input_ids: empty list; send one token-id list per prefix")
    if len(batch) > MAX_BATCH:
        raise ScoreError(HTTPStatus.BAD_REQUEST, f"input_ids: {len(batch)} prefixes exceed the limit {MAX_BATCH}")
    stop_ids = state.stop_token_ids()
    limit = int(tm.context_len) - k - 1  # room for k [STOP] tokens and the one sampled token
    for i, ids in enumerate(batch):
        if not ids:
            raise ScoreError(HTTPStatus.BAD_REQUEST, f"input_ids[{i}]: empty prefix")
        if len(ids) > limit:
            raise ScoreError(
                HTTPStatus.BAD_REQUEST,
                f"input_ids[{i}]: {len(ids)} tokens; at most {limit} fit the context length {tm.context_len} "
                f"with {k} [STOP] tokens",
            )
        lo, hi = min(ids), max(ids)
        if lo < 0 or hi >= vocab:
            raise ScoreError(HTTPStatus.BAD_REQUEST, f"input_ids[{i}]: token id out of range [0, {vocab})")
        if stop_ids and not stop_ids.isdisjoint(ids):
            raise ScoreError(HTTPStatus.BAD_REQUEST, f"input_ids[{i}]: contains the reserved [STOP] token id")


async def _generate(tm: Any, request: Any, **kwargs: Any) -> list[dict[str, Any]]:
    from sglang.srt.managers.io_struct import GenerateReqInput

    try:
        out = await tm.generate_request(GenerateReqInput(**kwargs), request).__anext__()
    except ValueError as e:
        raise ScoreError(getattr(e, "status_code", HTTPStatus.BAD_REQUEST), str(e)) from None
    return out if isinstance(out, list) else [out]


def _last_hidden(meta: dict[str, Any]) -> list[float]:
    hs = meta.get("hidden_states")
    if not hs:
        raise ScoreError(
            HTTPStatus.SERVICE_UNAVAILABLE,
            "no hidden states returned: start the server with --return-hidden-states-mode last",
        )
    rows = hs  # "last" mode: the row itself
    if rows and isinstance(rows[0], list):  # [row] or [prefill rows] (+ decode rows): the last prefill row
        rows = rows[0]
        while rows and isinstance(rows[0], list):
            rows = rows[-1]
    return rows


def dp_rank(tm: Any, body: ScoreRequest) -> int | None:
    """The one replica for this call's commit and score: the caller's, else a stable pick (None with one)."""
    dp = int(getattr(tm.server_args, "dp_size", 1) or 1)
    if body.routed_dp_rank is not None:
        if body.routed_dp_rank >= dp:
            raise ScoreError(HTTPStatus.BAD_REQUEST,
                             f"routed_dp_rank: {body.routed_dp_rank} out of range [0, {dp}) (--dp-size {dp})")
        return body.routed_dp_rank
    if dp <= 1:
        return None
    return zlib.crc32(repr(body.input_ids[0]).encode()) % dp


def check_server(tm: Any) -> None:
    """Flags that make scores wrong (page size, radix cache, hidden states, ...) refuse the first request."""
    from sglang_stop.srt.state import server_problem

    problem = server_problem(tm.server_args)
    if problem:
        raise ScoreError(HTTPStatus.SERVICE_UNAVAILABLE, problem)


async def _score_once(tm: Any, request: Any, body: ScoreRequest, cfg: Any, w: torch.Tensor, b: torch.Tensor):
    from sglang_stop.srt.state import internal_key

    n = len(body.input_ids)
    rank = dp_rank(tm, body)
    if body.commit:
        await _generate(tm, request, input_ids=body.input_ids, sampling_params=[{"max_new_tokens": 0}] * n,
                        routed_dp_rank=rank)
    stop = [cfg.stop_token_id] * cfg.num_stop_tokens
    outs = await _generate(
        tm,
        request,
        input_ids=[ids + stop for ids in body.input_ids],
        sampling_params=[{"max_new_tokens": 1, "temperature": 0.0}] * n,
        lora_path=[body.adapter] * n,
        return_hidden_states="last",
        extra_key=[internal_key()] * n,
        routed_dp_rank=rank,
    )
    hidden = torch.tensor([_last_hidden(o["meta_info"]) for o in outs], dtype=torch.float32)
    if hidden.shape[-1] != w.shape[1]:  # e.g. EAGLE3's packed aux hidden states replace the final one
        raise ScoreError(HTTPStatus.SERVICE_UNAVAILABLE,
                         f"the server returned hidden states of {hidden.shape[-1]} values, the STOP head reads "
                         f"{w.shape[1]} (the final-norm state): launch without aux-hidden-state capture "
                         "(EAGLE3 speculative decoding, --enable-return-aux-hidden-states)")
    probs = torch.softmax(hidden @ w.T + b, dim=-1)[:, cfg.positive_label]
    cached = [int(o["meta_info"].get("cached_tokens", 0)) for o in outs]
    return probs.tolist(), cached


async def stop_score(request: Request):
    try:
        body = await parse_score_request(request)
        tm = _tokenizer_manager()
        check_server(tm)
        cfg, w, b = _resolve_adapter(tm, body.adapter)
        _validate_ids(tm, body.input_ids, cfg.num_stop_tokens, cfg.vocab_size)
        for attempt in range(2):
            scores, cached = await _score_once(tm, request, body, cfg, w, b)
            short = [i for i, (c, ids) in enumerate(zip(cached, body.input_ids)) if c < len(ids)]
            if not short:
                resp = ScoreResponse(scores=scores, cached_tokens=cached, num_stop_tokens=cfg.num_stop_tokens)
                return resp.model_dump()
            if not body.commit:
                raise ScoreError(
                    HTTPStatus.CONFLICT,
                    f"prefixes {short} were not fully cached (commit=false): commit them first or send commit=true",
                )
            logger.warning("stop/score: prefixes %s lost their cache between commit and score (try %d)", short, attempt)
        raise ScoreError(HTTPStatus.SERVICE_UNAVAILABLE, "prefix KV evicted under memory pressure; retry later")
    except ScoreError as e:
        return _error(int(e.status), str(e))
    except Exception as e:  # never take the server down for one bad request
        logger.exception("stop/score failed")
        return _error(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error ({type(e).__name__}: {clip(str(e))}); "
                      "see the server log")


async def stop_adapters():
    try:
        tm = _tokenizer_manager()
    except ScoreError as e:
        return _error(int(e.status), str(e))
    out = []
    for name, ref in sorted(state.refresh_from_registry(tm).items()):
        entry = state.note_adapter_path(ref.lora_path) if ref.lora_path else None
        if entry is not None:
            cfg = entry[0]
            out.append(AdapterInfo(name=name, path=ref.lora_path, stop_token_id=cfg.stop_token_id,
                                   num_stop_tokens=cfg.num_stop_tokens))
    dp = int(getattr(tm.server_args, "dp_size", 1) or 1)
    return {"adapters": [a.model_dump() for a in out], "dp_size": dp}


def add_routes() -> None:
    """Attach the routes to sglang's module-level FastAPI app (once)."""
    from sglang.srt.entrypoints.http_server import app

    if any(getattr(r, "path", None) == "/stop/score" for r in app.router.routes):
        return
    app.post("/stop/score", response_model=None)(stop_score)
    app.get("/stop/adapters")(stop_adapters)
