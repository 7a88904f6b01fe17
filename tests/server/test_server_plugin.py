"""The plugin inside the real SGLang server: scores vs a torch reference, radix reuse, [STOP] protection,
bad requests, and concurrent scoring while generations run."""

from __future__ import annotations

import json
import random
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

pytestmark = pytest.mark.server

TOL = 1e-4


def _score(server, prefixes, **extra):
    r = requests.post(server.url + "/stop/score", json={"input_ids": prefixes, **extra}, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


def _generate(server, ids, n, **sp):
    body = {"input_ids": ids, "sampling_params": {"max_new_tokens": n, "temperature": 0.0, **sp}}
    r = requests.post(server.url + "/generate", json=body, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


def _stop_id(artifacts) -> int:
    return json.loads((artifacts.adapter / "stop" / "config.json").read_text())["stop_token_id"]


def _prefixes(artifacts, seed=0, n=6):
    """Real text prefixes plus random-id ones of varied lengths."""
    from transformers import AutoTokenizer

    t = AutoTokenizer.from_pretrained(artifacts.model)
    rng = random.Random(seed)
    texts = ["Let x be 5. The answer is", "First compute 12 * 7 = 84", "We add the digits: 1 + 2"]
    out = [t(s)["input_ids"] for s in texts]
    out += [[rng.randrange(len(t)) for _ in range(rng.randint(3, 60))] for _ in range(n - len(out))]
    return out


def test_scores_equal_reference_and_reuse_base_prefix(server, reference, artifacts):
    prefixes = _prefixes(artifacts)
    got = _score(server, prefixes)
    want = [reference.score(p) for p in prefixes]
    for g, w in zip(got["scores"], want):
        assert abs(g - w) <= TOL, (got["scores"], want)
    assert got["cached_tokens"] == [len(p) for p in prefixes]  # the whole base prefix came from the cache
    assert len(set(round(s, 6) for s in want)) > 1  # the test can tell prefixes apart


def test_generated_branch_prefix(server, reference, artifacts):
    """A generation's last sampled token has no KV yet: /stop/score commits it before scoring."""
    prompt = _prefixes(artifacts)[0]
    out = _generate(server, prompt, 12)
    prefix = prompt + out["output_ids"]
    got = _score(server, [prefix])
    assert abs(got["scores"][0] - reference.score(prefix)) <= TOL
    assert got["cached_tokens"] == [len(prefix)]


def test_bad_requests_get_4xx_with_a_message(server, artifacts):
    sid = _stop_id(artifacts)
    cases = [
        {"input_ids": []},
        {"input_ids": [[]]},
        {"input_ids": [[1, 2, 3]], "adapter": "no-such-adapter"},
        {"input_ids": [[1, 2, 10**7]]},
        {"input_ids": [[1, 2, sid]]},
        {"input_ids": [[5] * 5000]},
        {"input_ids": "1 2 3"},
        {"prefixes": [[1, 2]]},
    ]
    for body in cases:
        r = requests.post(server.url + "/stop/score", json=body, timeout=60)
        assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
        assert "error" in r.text.lower() or "message" in r.text, r.text
    r = requests.post(server.url + "/stop/score", data=b"{not json", headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500
    assert requests.get(server.url + "/health", timeout=10).status_code == 200


def test_stop_token_cannot_be_smuggled_or_sampled(server, reference, artifacts):
    sid = _stop_id(artifacts)
    prefixes = _prefixes(artifacts, seed=1, n=4)
    before = _score(server, prefixes)["scores"]
    # Literal "[STOP]"/"[ASSESS]" text is ordinary text: no reserved id, a plain base request.
    for text in ["[STOP]", "x [STOP][STOP][STOP][STOP]", "[ASSESS] The answer is [STOP]"]:
        r = requests.post(server.url + "/generate", json={"text": text, "sampling_params": {"max_new_tokens": 4}},
                          timeout=120)
        assert r.status_code == 200, r.text
        assert sid not in r.json()["output_ids"]
    # The raw id is refused on the ordinary endpoints.
    r = requests.post(server.url + "/generate",
                      json={"input_ids": prefixes[0] + [sid] * 4, "sampling_params": {"max_new_tokens": 1}}, timeout=60)
    assert r.status_code == 400 and "STOP" in r.text
    # Never sampled, even when a request pushes it with a huge logit bias.
    out = _generate(server, prefixes[0], 6, logit_bias={str(sid): 1e4})
    assert sid not in out["output_ids"]
    after = _score(server, prefixes)["scores"]
    assert after == before


def test_64_concurrent_scores_while_generating(server, reference, artifacts):
    rng = random.Random(7)
    pool = _prefixes(artifacts, seed=3, n=8)
    want = {tuple(p): reference.score(p) for p in pool}
    stop_gen = threading.Event()
    gen_errors: list[str] = []

    def generate_loop(i: int) -> None:
        while not stop_gen.is_set():
            body = {"input_ids": pool[i % len(pool)], "sampling_params": {"max_new_tokens": 24, "temperature": 0.8}}
            r = requests.post(server.url + "/generate", json=body, timeout=300)
            if r.status_code != 200:
                gen_errors.append(r.text)

    gens = [threading.Thread(target=generate_loop, args=(i,), daemon=True) for i in range(4)]
    for g in gens:
        g.start()

    def one(j: int):
        batch = [pool[rng.randrange(len(pool))] for _ in range(1 + j % 3)]
        return batch, _score(server, batch)

    try:
        with ThreadPoolExecutor(64) as ex:
            results = list(ex.map(one, range(64)))
    finally:
        stop_gen.set()
        for g in gens:
            g.join(timeout=300)
    assert not gen_errors
    for batch, got in results:
        for p, s, c in zip(batch, got["scores"], got["cached_tokens"]):
            assert abs(s - want[tuple(p)]) <= TOL
            assert c == len(p)
    assert requests.get(server.url + "/health", timeout=10).status_code == 200
    _score(server, pool[:1])  # still serving


def _bad(server, data: bytes, status: int = 400) -> str:
    """POST a raw body to /stop/score; the reply must be small, one line, no source location."""
    r = requests.post(server.url + "/stop/score", data=data, headers={"content-type": "application/json"},
                      timeout=120)
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert len(r.content) < 1500, len(r.content)
    msg = r.json()["error"]["message"]
    assert "\n" not in msg and ".py" not in msg and not re.search(r"line \d+, in", msg), msg
    return msg


def test_error_replies_are_bounded_and_name_the_field(server):
    big = 10_000_000
    assert _bad(server, b'{"input_ids": "' + b"7" * big + b'"}') == "input_ids: Input should be a valid array"
    assert _bad(server, b'{"input_ids": [[1, 2]], "' + b"p" * big + b'": 1}').endswith(
        f"... ({big} chars): Extra inputs are not permitted")
    assert _bad(server, b"{" + b"x" * big).startswith("body: Invalid JSON")
    assert _bad(server, json.dumps({"input_ids": [[1, 2]], "adapter": "a" * big}).encode(), 404).startswith(
        "adapter: unknown adapter 'aaaa")
    assert _bad(server, json.dumps({"input_ids": [[5] * (big // 3)]}).encode()).startswith("input_ids[0]: ")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"input_ids": [[True, 2]]}, "input_ids[0][0]: Input should be a valid integer"),
        ({"input_ids": [[1, 2], [3, 4.0]]}, "input_ids[1][1]: Input should be a valid integer"),
        ({"input_ids": [["3", 2]]}, "input_ids[0][0]: Input should be a valid integer"),
        ({"input_ids": [[1, 2]], "commit": "yes"}, "commit: Input should be a valid boolean"),
        ({"input_ids": [[1, 2]], "commit": 1}, "commit: Input should be a valid boolean"),
        ({"input_ids": [[1, 2]], "adapter": 1}, "adapter: Input should be a valid string"),
    ],
)
def test_no_coercion_of_ids_or_flags(server, body, field):
    assert _bad(server, json.dumps(body).encode()) == field


def test_body_over_the_limit_is_refused_unread(server):
    """A declared 200 MB body gets 413 at once; the test sends only the headers."""
    import socket
    from urllib.parse import urlsplit

    u = urlsplit(server.url)
    with socket.create_connection((u.hostname, u.port), timeout=30) as s:
        s.sendall(b"POST /stop/score HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                  b"content-length: 200000000\r\n\r\n{")
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk or len(reply) > 100_000:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413"), reply[:300]
    assert b"body: 200000000 bytes exceed the limit" in reply


def test_adapter_loaded_after_startup_is_masked_and_scores(server, reference, artifacts, tmp_path):
    """/load_lora_adapter of a second STOP adapter (another reserved id): the scheduler's persistent mask is
    updated in place, so its id is never sampled either; it scores like the first (same checkpoint)."""
    from sglang_stop.srt.convert import convert_checkpoint

    vocab = json.loads((artifacts.model / "config.json").read_text())["vocab_size"]
    sid2 = vocab - 2
    assert sid2 != _stop_id(artifacts)
    convert_checkpoint(artifacts.checkpoint, artifacts.model, tmp_path / "stop2", stop_token_id=sid2,
                       check_weights=False)
    r = requests.post(server.url + "/load_lora_adapter",
                      json={"lora_name": "stop2", "lora_path": str(tmp_path / "stop2")}, timeout=300)
    assert r.status_code == 200, r.text
    listed = requests.get(server.url + "/stop/adapters", timeout=30).json()
    assert {a["name"]: a["stop_token_id"] for a in listed["adapters"]}["stop2"] == sid2 and listed["dp_size"] == 1
    prompt = _prefixes(artifacts)[0]
    out = _generate(server, prompt, 6, logit_bias={str(sid2): 1e4})
    assert sid2 not in out["output_ids"]
    got = _score(server, [prompt], adapter="stop2")
    assert abs(got["scores"][0] - reference.score(prompt)) <= TOL and got["cached_tokens"] == [len(prompt)]
