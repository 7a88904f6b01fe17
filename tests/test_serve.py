"""`sglang-stop serve` against a real uvicorn server on 127.0.0.1 (a random free port), driven by the
official `openai` client (the version sglang pins) and raw HTTP: completions, usage, streaming with
progress, concurrent requests sharing one decode batch, a disconnect releasing its branches, admission,
and bad requests. The model is the committed testbed (n=8, max_tokens 64)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

from sglang_stop.serve.background import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "testbed.yaml"
PROMPTS = ["Q4-8-8=", "Q1+2+3=", "Q9-4+7=", "Q5+5-2=", "Q3-9-1=", "Q8+1+1=", "Q2-7+4=", "Q6+3-8="]


@dataclass
class Served:
    engine: Any
    url: str

    def client(self) -> Any:
        return openai.OpenAI(base_url=self.url + "/v1", api_key="none", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    from sglang_stop.serve.background import serving
    from sglang_stop.serve.server import build_server

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    engine, app = build_server(str(CONFIG), None, (), 16, n=8, prefix_len=16, keep=2)
    try:
        with serving(app) as url:
            yield Served(engine, url)
    finally:
        for b in engine.backends:
            b.shutdown()
        torch.set_num_threads(threads)


@contextmanager
def slow_decode(engine: Any, seconds: float) -> Iterator[None]:
    """Every model forward takes ``seconds`` longer, so a request is still decoding when we act."""
    h = engine.backends[0].model.register_forward_pre_hook(lambda *_a: time.sleep(seconds))
    try:
        yield
    finally:
        h.remove()


def _ext(usage: Any) -> dict[str, Any]:
    return usage.model_extra["sglang_stop"] if hasattr(usage, "model_extra") else usage["sglang_stop"]


def test_chat_completion_usage_is_the_paths_tokens(served: Served) -> None:
    r = served.client().chat.completions.create(
        model="testbed", messages=[{"role": "user", "content": "Q4-8-8="}], max_tokens=64, seed=3)
    ext = _ext(r.usage)
    assert r.object == "chat.completion" and r.model == "testbed"
    assert r.usage.completion_tokens == sum(p["tokens"] for p in ext["paths"]) > 0
    assert r.usage.prompt_tokens == 8 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert ext["paths_launched"] == 8 and ext["paths_pruned"] == 6
    assert ext["tokens_unpruned_estimate"] >= r.usage.completion_tokens
    chosen = ext["paths"][ext["chosen_path"]]
    assert chosen["pruned_at"] is None and chosen["answer"] == ext["answer"]
    assert ext["answer"] is not None and r.choices[0].message.content.endswith("A" + ext["answer"])
    assert r.choices[0].finish_reason == "stop"


def test_completion_equals_sglang_stop_run(served: Served) -> None:
    """The same prompt, config and seed: the request samples the paths `run --question` samples."""
    from sglang_stop.api import build_config
    from sglang_stop.run_command import RunRequest, execute_run

    r = served.client().completions.create(model="testbed", prompt="Q7-3+5=", seed=11)
    cfg = build_config(str(CONFIG), n=8, prefix_len=16, keep=2, seed=11)
    summary, text = execute_run(RunRequest(cfg=cfg, question="Q7-3+5=", progress=False))
    ext = _ext(r.usage)
    assert r.usage.completion_tokens == summary.tokens
    assert text.splitlines()[0] == f"answer: {ext['answer']}"
    assert r.choices[0].text.strip() in text


def test_eight_concurrent_requests_share_the_batch(served: Served) -> None:
    client = served.client()
    before = served.engine.max_batch_seen()

    def ask(p: str) -> Any:
        return client.completions.create(model="testbed", prompt=p, seed=1)

    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(ask, PROMPTS))
    for p, r in zip(PROMPTS, together):
        ext = _ext(r.usage)
        assert r.object == "text_completion" and len(r.choices) == 1
        assert r.usage.completion_tokens == sum(x["tokens"] for x in ext["paths"]) and ext["paths_launched"] == 8
    assert served.engine.max_batch_seen() > max(8, before) or before > 8  # rows of several requests in one batch
    alone = [ask(p) for p in PROMPTS[:3]]
    for a, b in zip(alone, together):
        assert (a.choices[0].text, a.usage.completion_tokens) == (b.choices[0].text, b.usage.completion_tokens)


def test_stream_done_within_one_tick_still_sends_its_progress(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    import sglang_stop.serve.app as app

    monkeypatch.setattr(app, "TICK_S", 600.0)  # the request ends long before the first tick
    chunks = list(served.client().chat.completions.create(
        model="testbed", messages=[{"role": "user", "content": "Q2+2="}], stream=True, seed=3))
    progress = [c.model_extra["sglang_stop"]["progress"] for c in chunks if "sglang_stop" in (c.model_extra or {})]
    assert len(progress) == 1 and progress[0]["tokens_sampled"] == chunks[-1].usage.completion_tokens


def test_stream_progress_then_answer_then_done(served: Served) -> None:
    chunks = list(served.client().chat.completions.create(
        model="testbed", messages=[{"role": "user", "content": "Q1+2+3="}], stream=True, seed=2))
    progress = [c.model_extra["sglang_stop"]["progress"] for c in chunks if "sglang_stop" in (c.model_extra or {})]
    assert progress and progress[-1]["paths_launched"] == 8
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop" and last.usage is not None
    assert last.usage.completion_tokens == sum(p["tokens"] for p in _ext(last.usage)["paths"])
    assert progress[-1]["tokens_sampled"] == last.usage.completion_tokens  # the last event is the final count
    assert text.endswith("A" + _ext(last.usage)["answer"])
    with httpx.stream("POST", served.url + "/v1/completions", json={"prompt": "Q1+2+3=", "stream": True},
                      timeout=60) as r:
        lines = [ln for ln in r.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]" and all(ln.startswith("data: ") for ln in lines)


def _drop_stream_after_progress(url: str, prompt: str) -> None:
    """Open a chat stream and close the connection once its 8 paths are decoding."""
    with httpx.stream("POST", url + "/v1/chat/completions", timeout=30, json={
            "messages": [{"role": "user", "content": prompt}], "stream": True, "seed": 9}) as r:
        for line in r.iter_lines():
            prog = json.loads(line[6:]).get("sglang_stop", {}).get("progress") if line.startswith("data: {") else None
            if prog and prog["paths_running"] == 8 and prog["tokens_sampled"] > 0:
                return
    raise AssertionError("the stream ended before its paths were decoding")


def _cancelled(url: str) -> float:
    metrics = httpx.get(url + "/metrics").text
    line = next((ln for ln in metrics.splitlines()
                 if ln.startswith('sglang_stop_requests_total{route="/v1/chat/completions",status="cancelled"}')), None)
    return float(line.split()[-1]) if line else 0.0


def test_disconnect_mid_stream_releases_its_branches_within_a_second(served: Served) -> None:
    backend = served.engine.backends[0]
    cancelled = _cancelled(served.url)
    with slow_decode(served.engine, 0.1):  # 16 prefix tokens take >= 1.6 s: no path can end on its own here
        sampled = backend.usage().generated_tokens
        _drop_stream_after_progress(served.url, "Q4-8-8=")
        t0 = time.monotonic()
        while backend.live_branches() and time.monotonic() - t0 < 3:
            time.sleep(0.01)
        released_s = time.monotonic() - t0
    assert backend.live_branches() == 0 and released_s < 1.0, released_s
    assert backend.usage().generated_tokens - sampled < 8 * 16  # stopped inside the prefix stage
    assert _cancelled(served.url) == cancelled + 1
    again = served.client().completions.create(model="testbed", prompt="Q4-8-8=")
    assert again.usage.completion_tokens > 0


def test_a_client_gone_before_a_plain_reply_cancels_its_run(served: Served) -> None:
    backend = served.engine.backends[0]
    with slow_decode(served.engine, 0.1):
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(served.url + "/v1/completions", json={"prompt": "Q4-8-8="}, timeout=0.6)
        t0 = time.monotonic()
        while backend.live_branches() and time.monotonic() - t0 < 3:
            time.sleep(0.01)
        released_s = time.monotonic() - t0
    assert backend.live_branches() == 0 and released_s < 1.0, released_s


def test_a_dropped_stream_does_not_disturb_other_requests(served: Served) -> None:
    """Cancel is per request: a concurrent request gives exactly what it gives alone."""
    engine, backend = served.engine, served.engine.backends[0]
    with slow_decode(engine, 0.05):
        other = ThreadPoolExecutor(1).submit(
            served.client().completions.create, model="testbed", prompt="Q9-4+7=", seed=5)
        t0 = time.monotonic()
        while not backend.live_branches() and time.monotonic() - t0 < 10:
            time.sleep(0.01)
        _drop_stream_after_progress(served.url, "Q4-8-8=")
        busy = other.result(timeout=60)
    alone = served.client().completions.create(model="testbed", prompt="Q9-4+7=", seed=5)
    assert (busy.choices[0].text, busy.usage.completion_tokens) == (alone.choices[0].text, alone.usage.completion_tokens)
    busy_paths, alone_paths = _ext(busy.usage)["paths"], _ext(alone.usage)["paths"]
    drop = ("scores",)  # the KV of a row in another batch differs in the last float bits
    assert [{k: v for k, v in p.items() if k not in drop} for p in busy_paths] == [
        {k: v for k, v in p.items() if k not in drop} for p in alone_paths]
    for a, b in zip(busy_paths, alone_paths):
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-5)
    t0 = time.monotonic()
    while backend.live_branches() and time.monotonic() - t0 < 2:
        time.sleep(0.01)
    assert backend.live_branches() == 0


def test_admission_limit_gives_429_with_retry_after(served: Served) -> None:
    engine = served.engine
    old = engine.max_concurrent
    with slow_decode(engine, 0.05):
        engine.max_concurrent = 1
        try:
            first = ThreadPoolExecutor(1).submit(httpx.post, served.url + "/v1/completions",
                                                 json={"prompt": "Q1+2="}, timeout=60)
            t0 = time.monotonic()
            while engine.in_flight == 0 and time.monotonic() - t0 < 10:
                time.sleep(0.01)
            r = httpx.post(served.url + "/v1/completions", json={"prompt": "Q1+2="}, timeout=10)
        finally:
            engine.max_concurrent = old
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        assert "requests running" in r.json()["error"]["message"]
        assert first.result(timeout=60).status_code == 200


BAD = [
    ("malformed-json", "/v1/chat/completions", '{"messages": [', 400, "invalid JSON"),
    ("not-an-object", "/v1/completions", "[1, 2]", 400, "expected a JSON object"),
    ("unknown-override", "/v1/completions", {"prompt": "Q1+2=", "sglang_stop": {"nn": 4}}, 400, "nn: unknown key"),
    ("keep-above-n", "/v1/completions", {"prompt": "Q1+2=", "sglang_stop": {"n": 1}}, 400,
     "stages.0.keep: 2 exceeds the 1 paths alive"),
    ("keep-above-n-stages", "/v1/completions",
     {"prompt": "Q1+2=", "sglang_stop": {"stages": [{"prefix_len": 8, "keep": 9}]}}, 400, "stages.0.keep: 9 exceeds"),
    ("empty-messages", "/v1/chat/completions", {"messages": []}, 400, "messages: must be a non-empty list"),
    ("no-messages", "/v1/chat/completions", {"model": "testbed"}, 400, "messages: required"),
    ("bad-role", "/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, 400, "messages.0.role"),
    ("image-part", "/v1/chat/completions",
     {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, 400,
     "only text parts"),
    ("over-long-prompt", "/v1/completions", {"prompt": "Q1+2=" * 30}, 400, "exceed the model's context window"),
    ("n-choices", "/v1/completions", {"prompt": "Q1+2=", "n": 2}, 400, "n: only n=1"),
    ("unknown-openai-field", "/v1/completions", {"prompt": "Q1+2=", "logprobs": 5}, 400, "logprobs: unknown field"),
    ("bad-temperature", "/v1/completions", {"prompt": "Q1+2=", "temperature": -1}, 400, "sampling.temperature"),
    ("max-tokens-below-prefix", "/v1/completions", {"prompt": "Q1+2=", "max_tokens": 8}, 400,
     "max_tokens sets sampling.max_new_tokens"),
    ("override-model", "/v1/completions", {"prompt": "Q1+2=", "sglang_stop": {"model": {"path": "/x"}}}, 400,
     "sglang_stop.model: cannot be set per request"),
    ("override-checkpoint", "/v1/completions",
     {"prompt": "Q1+2=", "sglang_stop": {"scorer": {"options": {"checkpoint": "/etc"}}}}, 400, "checkpoint"),
    ("unknown-scorer", "/v1/completions", {"prompt": "Q1+2=", "sglang_stop": {"scorer": "psychic"}}, 400, "psychic"),
    ("bad-scorer-option", "/v1/completions",
     {"prompt": "Q1+2=", "sglang_stop": {"scorer": {"name": "confidence", "options": {"window": "8"}}}}, 400,
     "scorer.options.window"),
    ("wrong-model", "/v1/completions", {"model": "gpt-4", "prompt": "Q1+2="}, 404, "model: 'gpt-4' is not served"),
    ("empty-prompt", "/v1/completions", {"prompt": ""}, 400, "prompt: must be a non-empty string"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_request_is_a_4xx_naming_the_problem(served: Served, case: tuple[Any, ...]) -> None:
    _, route, body, status, fragment = case
    content = body if isinstance(body, str) else json.dumps(body)
    r = httpx.post(served.url + route, content=content, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert fragment in err["message"] and "\n" not in err["message"]


def test_openai_client_sees_a_bad_override_as_bad_request(served: Served) -> None:
    with pytest.raises(openai.BadRequestError, match="exceeds"):
        served.client().chat.completions.create(model="testbed", messages=[{"role": "user", "content": "Q1+2="}],
                                                extra_body={"sglang_stop": {"n": 4, "stages": [
                                                    {"prefix_len": 8, "keep": 5}]}})


def test_overrides_apply_per_request(served: Served) -> None:
    r = served.client().completions.create(model="testbed", prompt="Q4-8-8=", max_tokens=40, extra_body={
        "sglang_stop": {"n": 4, "scorer": "none"}})
    ext = _ext(r.usage)
    assert ext["paths_launched"] == 4 and ext["paths_pruned"] == 0 and ext["stages"] == [] and ext["scorer"] == "none"
    assert all(p["tokens"] <= 40 for p in ext["paths"])


def test_a_thousand_bad_requests_leave_it_healthy(served: Served) -> None:
    bodies = ['{"prompt": "Q1', json.dumps({"prompt": "Q1+2=", "sglang_stop": {"zz": 1}}),
              json.dumps({"messages": []}), json.dumps({"prompt": "Q1+2=", "sglang_stop": {"n": 1}})]
    with httpx.Client(base_url=served.url, timeout=30) as c:
        codes = {c.post("/v1/completions" if i % 4 != 2 else "/v1/chat/completions", content=bodies[i % 4],
                        headers={"content-type": "application/json"}).status_code for i in range(1000)}
        assert codes == {400}
        health = c.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ok" and health.json()["in_flight"] == 0
        assert c.get("/v1/models").json()["data"][0]["id"] == "testbed"
        ok = c.post("/v1/completions", json={"prompt": "Q4-8-8="})
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] > 0
        metrics = c.get("/metrics").text
    assert 'sglang_stop_requests_total{route="/v1/completions",status="400"}' in metrics
    for name in ("sglang_stop_paths_launched_total", "sglang_stop_paths_pruned_total", "sglang_stop_tokens_sampled_total",
                 "sglang_stop_tokens_saved_total", "sglang_stop_scoring_seconds_count", "sglang_stop_queue_depth"):
        assert name in metrics


def test_chat_prompt_is_the_models_chat_template(served: Served) -> None:
    from sglang_stop.serve.schemas import ChatRequest

    tok = served.engine.backends[0].tokenizer
    req = ChatRequest(messages=[{"role": "system", "content": "be brief"},
                                {"role": "user", "content": [{"type": "text", "text": "Q1+"}, {"type": "text", "text": "2="}]}])
    assert served.engine.chat_prompt(req, 0) == "be brief\n\nQ1+2="  # the testbed has no chat template
    tok.chat_template = "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"
    try:
        assert served.engine.chat_prompt(req, 0) == "[system]be brief[user]Q1+2=[assistant]"
    finally:
        tok.chat_template = None


@pytest.mark.slow
def test_embedded_default_serves_a_chat_completion() -> None:
    """`sglang-stop serve` out of the box (SmolLM2-135M, the packaged config, its chat template)."""
    from sglang_stop.serve.background import serving
    from sglang_stop.serve.server import build_server

    engine, app = build_server(None, None, (), 2, n=4, prefix_len=16, keep=2, sampling__max_new_tokens=48)
    try:
        with serving(app) as url:
            client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
            r = client.chat.completions.create(model="smollm2-135m-instruct",
                                               messages=[{"role": "user", "content": "What is 17 + 25 - 9?"}])
    finally:
        engine.backends[0].shutdown()
    ext = _ext(r.usage)
    assert r.usage.completion_tokens == sum(p["tokens"] for p in ext["paths"]) > 4 * 16 // 2
    assert ext["paths_launched"] == 4 and r.choices[0].message.content


def _serve_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sglang_stop.serve", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_cli_bad_input_is_one_line_before_loading() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = str(busy.getsockname()[1])
        cases = [
            (["--config", "nope.yaml", "--port", str(free_port())], "--config nope.yaml: config file not found"),
            (["--config", str(CONFIG), "--port", port], f"--port {port}: cannot listen on 127.0.0.1: address already"),
            (["--model", "x", "--server", "http://127.0.0.1:1", "--port", str(free_port())],
             "--model: not with --server"),
        ]
        for argv, fragment in cases:
            p = _serve_cli(*argv)
            errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
            assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
            assert len(errors) == 1 and fragment in errors[0], p.stderr


def test_the_command_serves_and_stops_on_sigterm() -> None:
    """The real command: it starts, answers, and SIGTERM ends it gracefully with exit 143 and one line."""
    import signal

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "sglang_stop.cli", "serve", "--config", str(CONFIG), "--port", str(port),
                             "--log-level", "warning"], cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve did not come up"
            time.sleep(0.2)
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).json()["data"][0]["id"] == "testbed"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "sglang-stop serve: stopped by SIGTERM (open requests were answered first)"
