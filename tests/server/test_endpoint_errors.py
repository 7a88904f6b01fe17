"""StopEndpoint's failures against stand-in servers (tests/server/fake.py; no real server, seconds): each
is one ServerError (a UserError) naming the server and what happened, never a client traceback or a hang."""

from __future__ import annotations

import time

import pytest

from fake import closed_port, fake_server
from sglang_stop.backends.endpoint import BranchState, ServerError, StopEndpoint
from sglang_stop.errors import UserError
from tests.battery import TESTBED


def _error(fn, *args, **kwargs) -> ServerError:
    with pytest.raises(ServerError) as info:
        fn(*args, **kwargs)
    return info.value


def test_unreachable_is_not_called_a_non_sglang_server():
    url = f"http://127.0.0.1:{closed_port()}"
    msg = str(_error(StopEndpoint, url))
    assert msg == f"server {url}: cannot connect: connection refused — is the server running?"


def test_reachable_non_sglang_server():
    with fake_server("not-sglang", TESTBED) as srv:
        msg = str(_error(StopEndpoint, srv.url))
    assert msg == f"server {srv.url}: not an SGLang server (GET /get_model_info: HTTP 404)"


@pytest.mark.parametrize("url", ["127.0.0.1:30000", "ftp://127.0.0.1:30000", "http://", "http://127.0.0.1:99999"])
def test_bad_url_is_refused_before_any_request(url):
    with pytest.raises(UserError, match=r"^--server '.*': .*http://HOST:PORT"):
        StopEndpoint(url)


@pytest.mark.parametrize(
    ("mode", "fragment"),
    [
        ("500", "POST /generate: HTTP 500: scheduler died"),
        ("drop", "POST /generate: the server closed the connection without replying"),
        ("die", "POST /generate: the server closed the connection without replying"),
        ("no-plugin", "POST /generate: HTTP 404"),
    ],
)
def test_failures_mid_run_are_one_line_naming_the_server(mode, fragment):
    with fake_server(mode, TESTBED) as srv:
        ep = StopEndpoint(srv.url)  # connecting works: the server dies (or fails) afterwards
        assert ep.tokenize("1+2", add_special_tokens=False)
        e = _error(ep.stop_score, [BranchState(ids=[1, 2, 3])])
        msg = str(e)
        assert msg.startswith(f"server {srv.url}: ") and fragment in msg, msg
        assert "\n" not in msg and len(msg) < 400  # a 5 kB error reply is clipped
        if mode == "die":  # the next request finds nothing listening
            msg = str(_error(ep.tokenize, "1", add_special_tokens=False))
            assert msg == f"server {srv.url}: POST /tokenize: connection refused — the server stopped during the run"
        ep.shutdown()


def test_a_stuck_server_times_out():
    with fake_server("slow", TESTBED, slow_s=30) as srv:
        ep = StopEndpoint(srv.url, timeout_s=0.5)
        t = time.monotonic()
        msg = str(_error(ep.stop_score, [BranchState(ids=[1, 2])]))
        assert time.monotonic() - t < 10
    assert msg == f"server {srv.url}: no reply to POST /generate within 0.5s — is the server stuck?"


def test_check_stop_adapter_names_the_missing_plugin():
    with fake_server("no-plugin", TESTBED) as srv:
        msg = str(_error(StopEndpoint(srv.url).check_stop_adapter))
    assert msg.startswith(f"server {srv.url}: no /stop/adapters route") and "sglang-stop plugin" in msg



def test_stop_scorer_prepare_asks_the_server_for_the_adapter():
    """`--scorer stop --server URL` against a server without the plugin fails in prepare, before decoding."""
    from sglang_stop.scorers import make_scorer

    with fake_server("no-plugin", TESTBED) as srv:
        ep = StopEndpoint(srv.url)
        try:
            msg = str(_error(make_scorer("stop", {}).prepare, ep))
        finally:
            ep.shutdown()
    assert msg.startswith(f"server {srv.url}: no /stop/adapters route")
