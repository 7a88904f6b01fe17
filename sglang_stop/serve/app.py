"""The FastAPI app: OpenAI's chat/completions routes over :class:`~sglang_stop.serve.engine.Engine`,
plus /v1/models, /health and /metrics.

Bodies are parsed here (not by FastAPI's validation) so every bad request is a 4xx in OpenAI's error
shape with one message naming the field, and never a 500: malformed JSON, an unknown field, a bad
override. A request's run happens on a worker thread; the event loop only waits on it, so /health and
/metrics answer while requests decode. A client that goes away (a dropped stream, or a closed
connection while waiting for a non-streamed answer) cancels its run: its paths end and free their KV.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError

from sglang_stop.errors import RunInterrupted, UserError, validation_message
from sglang_stop.serve.engine import Engine, Job, ServeError, answer_text, usage_of
from sglang_stop.serve.metrics import CONTENT_TYPE, Metrics
from sglang_stop.serve.schemas import ChatRequest, CompletionRequest

log = logging.getLogger("sglang_stop.serve")
MAX_BODY_BYTES = 4 << 20  # a prompt is checked against the context window; this bounds the parse first
TICK_S = 0.25  # progress events / disconnect checks while a request's paths run


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


def _validation_message(err: ValidationError) -> str:
    return validation_message(
        err, unknown="unknown field (not implemented by this server; STOP settings go in 'sglang_stop')",
        missing="required")


async def _parse(request: Request, model: type[BaseModel]) -> Any:
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise ServeError(f"request body: {len(body)} bytes, over the {MAX_BODY_BYTES} byte limit", status=413)
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = f" at line {e.lineno} column {e.colno}" if isinstance(e, json.JSONDecodeError) else ""
        reason = e.msg if isinstance(e, json.JSONDecodeError) else "not UTF-8"
        raise ServeError(f"request body: invalid JSON ({reason}{where})") from None
    if not isinstance(data, dict):
        raise ServeError(f"request body: expected a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ServeError(_validation_message(e)) from None


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


def create_app(engine: Engine, metrics: Metrics | None = None) -> FastAPI:
    """The app over ``engine``; ``metrics`` must be the one whose ``stats()`` the engine was built with."""
    metrics = metrics or Metrics()
    pool = ThreadPoolExecutor(max_workers=engine.max_concurrent, thread_name_prefix="sglang-stop-serve")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="sglang-stop", description="OpenAI-compatible pruned parallel reasoning", lifespan=lifespan)
    app.state.engine, app.state.metrics = engine, metrics

    @app.exception_handler(ServeError)
    async def _serve_error(request: Request, exc: ServeError) -> JSONResponse:
        metrics.requests.labels(request.url.path, str(exc.status)).inc()
        return JSONResponse(error_body(str(exc), exc.kind, exc.param), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s", request.url.path)
        metrics.requests.labels(request.url.path, "500").inc()
        return JSONResponse(error_body(f"internal error: {type(exc).__name__}: {exc}", "server_error"), status_code=500)

    def start(job: Job) -> asyncio.Future[Any]:
        """Run the job on a worker; the admission slot is freed when the run has unwound."""
        cf = pool.submit(engine.run, job)
        cf.add_done_callback(lambda _f: engine.release(job.slot))
        fut = asyncio.wrap_future(cf)
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # a dropped client's run: retrieved here
        return fut

    async def admitted_job(req: ChatRequest | CompletionRequest) -> Job:
        slot = engine.acquire()
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, engine.prepare, req, slot)
        except BaseException:
            engine.release(slot)
            raise

    def finish(res: Any, job: Job, t0: float, route: str) -> tuple[str, str, Any]:
        usage = usage_of(res, job)
        metrics.record_usage(usage)
        metrics.latency.observe(time.perf_counter() - t0)
        metrics.requests.labels(route, "200").inc()
        text, reason = answer_text(res)
        return text, reason, usage.model_dump(mode="json")

    async def wait_run(fut: asyncio.Future[Any], job: Job, request: Request) -> Any:
        """The run's result; None (and the run cancelled) if the client disconnects while we wait."""
        try:
            while True:
                done, _ = await asyncio.wait({fut}, timeout=TICK_S)
                if done:
                    return _result(fut)
                if await request.is_disconnected():
                    job.cancel.set()
                    metrics.requests.labels(request.url.path, "cancelled").inc()
                    return None
        except asyncio.CancelledError:
            job.cancel.set()
            raise

    def _result(fut: asyncio.Future[Any]) -> Any:
        try:
            return fut.result()
        except UserError as e:  # checked up front; what is left (a scorer refusing the paths) is the request's
            raise ServeError(f"request: {e}") from None

    async def handle(request: Request, kind: str) -> Response:
        t0 = time.perf_counter()
        req = await _parse(request, ChatRequest if kind == "chat" else CompletionRequest)
        job = await admitted_job(req)
        rid = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
        fut = start(job)
        if req.stream:
            return StreamingResponse(stream(fut, job, kind, rid, request.url.path, t0), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        res = await wait_run(fut, job, request)
        if res is None:  # nobody is listening any more
            return Response(status_code=499)
        text, reason, usage = finish(res, job, t0, request.url.path)
        if kind == "chat":
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                      "finish_reason": reason, "logprobs": None}
        else:
            choice = {"index": 0, "text": text, "finish_reason": reason, "logprobs": None}
        return JSONResponse({"id": rid, "object": "chat.completion" if kind == "chat" else "text_completion",
                             "created": int(time.time()), "model": engine.model_name, "choices": [choice],
                             "usage": usage})

    async def stream(fut: asyncio.Future[Any], job: Job, kind: str, rid: str, route: str,
                     t0: float) -> AsyncIterator[str]:
        created = int(time.time())
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"

        def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> str:
            if kind == "chat":
                choice: dict[str, Any] = {"index": 0, "delta": delta or {}, "finish_reason": finish, "logprobs": None}
            else:
                choice = {"index": 0, "text": (delta or {}).get("content", ""), "finish_reason": finish,
                          "logprobs": None}
            return _sse({"id": rid, "object": obj, "created": created, "model": engine.model_name,
                         "choices": [choice], **extra})

        try:
            yield chunk({"role": "assistant", "content": ""} if kind == "chat" else {})
            last = None
            while True:
                done, _ = await asyncio.wait({fut}, timeout=TICK_S)
                if done:
                    break
                prog = job.progress()
                if prog != last:
                    last = prog
                    yield chunk(sglang_stop={"progress": prog})
            try:
                res = _result(fut)
            except Exception as e:  # noqa: BLE001 - the status line is sent: the error goes in the stream
                status, body = (e.status, error_body(str(e), e.kind)) if isinstance(e, ServeError) else (
                    500, error_body(f"internal error: {type(e).__name__}: {e}", "server_error"))
                if status == 500:
                    log.error("internal error in a stream", exc_info=e)
                metrics.requests.labels(route, str(status)).inc()
                yield _sse(body)
                yield "data: [DONE]\n\n"
                return
            prog = job.progress()  # the final counts: a request done within one tick still streams one
            if prog != last:
                yield chunk(sglang_stop={"progress": prog})
            text, reason, usage = finish(res, job, t0, route)
            yield chunk({"content": text})
            yield chunk(finish=reason, usage=usage)
            yield "data: [DONE]\n\n"
        finally:
            if not fut.done():  # the client went away mid-stream: end its paths now
                job.cancel.set()
                metrics.requests.labels(route, "cancelled").inc()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return await handle(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await handle(request, "completion")

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": engine.model_name, "object": "model", "created": 0,
                                            "owned_by": "sglang-stop"}]}

    @app.get("/health")
    async def health() -> JSONResponse:
        dead = [i for i, b in enumerate(engine.backends)
                if getattr(getattr(b, "_thread", None), "is_alive", lambda: True)() is False]
        body = {"status": "ok" if not dead else "unhealthy", "in_flight": engine.in_flight,
                "live_branches": engine.live_branches(), "max_concurrent": engine.max_concurrent}
        return JSONResponse(body, status_code=200 if not dead else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(engine.in_flight, engine.live_branches()), media_type=CONTENT_TYPE)

    return app


__all__ = ["RunInterrupted", "create_app", "error_body"]
