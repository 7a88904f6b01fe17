"""The plugin's GPU-safety rules, checked on CPU without a server: the [STOP] logits mask is a persistent
device tensor (no host data in the forward; adapters loaded later are masked in the same memory, which a
CUDA graph's replays read), flags that make scores wrong are refused naming the flag, multi-node launches
share SGLANG_STOP_SECRET, and with data parallelism a prefix's commit and score go to one replica."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import tiny
from sglang_stop.srt import plugin, routes, state
from sglang_stop.srt.convert import convert_checkpoint


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    d = tmp_path_factory.mktemp("gpu-safety")
    model = tiny.make_model(d / "model")
    ckpt = tiny.make_stop_checkpoint(model, d / "ckpt")
    vocab = json.loads((model / "config.json").read_text())["vocab_size"]
    first = convert_checkpoint(ckpt, model, d / "a1", check_weights=False)
    second = convert_checkpoint(ckpt, model, d / "a2", stop_token_id=vocab - 2, check_weights=False)
    return SimpleNamespace(vocab=vocab, a1=d / "a1", a2=d / "a2", id1=first.stop_token_id, id2=second.stop_token_id)


@pytest.fixture()
def fresh_state(monkeypatch):
    """A scheduler process before any adapter loaded."""
    monkeypatch.setattr(state, "_adapters", {})
    monkeypatch.setattr(state, "_not_stop", set())
    monkeypatch.setattr(state, "_ids", frozenset())
    monkeypatch.setattr(state, "_masks", {})


class _Ops(TorchDispatchMode):
    """Records every aten op and the devices of its tensor arguments."""

    def __init__(self):
        super().__init__()
        self.ops: list[tuple[str, set[str]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        devs = {a.device.type for a in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)}
        self.ops.append((str(func), devs))
        return func(*args, **(kwargs or {}))


def _manager(device: str, vocab: int):
    return SimpleNamespace(device=torch.device(device), base_hf_config=SimpleNamespace(vocab_size=vocab))


def test_mask_touches_no_host_memory_in_the_forward(made, fresh_state, monkeypatch):
    """Logits on the meta device stand in for CUDA: every op of the hook runs on the logits' device, and no
    host tensor (torch.tensor / as_tensor of a Python list) is built in the hot path."""
    plugin._after_lora_manager_init(None, _manager("meta", made.vocab))  # start-up, before graph capture
    state.note_adapter_path(str(made.a1))
    logits = torch.empty(3, made.vocab, device="meta")

    def forbidden(*a, **k):
        raise AssertionError("host tensor built in the forward")

    monkeypatch.setattr(torch, "tensor", forbidden)
    monkeypatch.setattr(torch, "as_tensor", forbidden)
    with _Ops() as rec:
        plugin._mask_stop_logits(SimpleNamespace(next_token_logits=logits))
    assert any("masked_fill_" in op for op, _ in rec.ops), rec.ops
    assert all(devs == {"meta"} for _, devs in rec.ops), rec.ops
    host_ops = ("_to_copy", "copy_", "index_put", "lift_fresh", "scalar_tensor")  # what a list index would do
    assert not any(name in op for op, _ in rec.ops for name in host_ops), rec.ops


def test_adapter_loaded_after_startup_is_masked_in_place(made, fresh_state):
    plugin._after_lora_manager_init(None, _manager("cpu", made.vocab))
    mask = state.logits_mask(torch.device("cpu"))
    ptr = mask.data_ptr()
    state.note_adapter_path(str(made.a1))  # --lora-paths at start-up
    out = SimpleNamespace(next_token_logits=torch.zeros(2, made.vocab))
    plugin._mask_stop_logits(out)
    assert torch.isinf(out.next_token_logits[:, made.id1]).all() and out.next_token_logits[:, made.id2].eq(0).all()

    state.note_adapter_path(str(made.a2))  # /load_lora_adapter after the graphs were captured
    assert state.logits_mask(torch.device("cpu")) is mask and mask.data_ptr() == ptr  # replays read this memory
    out = SimpleNamespace(next_token_logits=torch.zeros(2, made.vocab))
    plugin._mask_stop_logits(out)
    lg = out.next_token_logits
    assert torch.isinf(lg[:, [made.id1, made.id2]]).all() and torch.isfinite(lg[:, : made.id2]).all()


def test_no_lora_manager_no_ids_no_work(fresh_state):
    out = SimpleNamespace(next_token_logits=torch.zeros(1, 8))
    plugin._mask_stop_logits(out)
    assert out.next_token_logits.eq(0).all() and state.logits_mask(torch.device("cpu")) is None


GOOD = dict(page_size=1, disable_radix_cache=False, enable_return_hidden_states=False,
            return_hidden_states_mode="last", max_loras_per_batch=8, nnodes=1, dp_size=1)


@pytest.mark.parametrize(
    "change, flag",
    [
        ({"page_size": 16}, "--page-size 16"),
        ({"disable_radix_cache": True}, "--disable-radix-cache"),
        ({"return_hidden_states_mode": None}, "--return-hidden-states-mode"),
        ({"max_loras_per_batch": 1}, "--max-loras-per-batch 1"),
        ({"enable_return_aux_hidden_states": True}, "--enable-return-aux-hidden-states"),
        ({"nnodes": 2}, "SGLANG_STOP_SECRET"),
    ],
)
def test_server_problem_names_the_flag(change, flag, monkeypatch):
    monkeypatch.delenv(plugin.SECRET_ENV, raising=False)
    assert plugin.server_problem(SimpleNamespace(**GOOD)) is None
    msg = plugin.server_problem(SimpleNamespace(**{**GOOD, **change}))
    assert msg and msg.startswith(flag) and "\n" not in msg
    if flag == "SGLANG_STOP_SECRET":
        monkeypatch.setenv(plugin.SECRET_ENV, "shared")
        assert plugin.server_problem(SimpleNamespace(**{**GOOD, **change})) is None
    assert plugin.server_problem(SimpleNamespace(**{**GOOD, "return_hidden_states_mode": None,
                                                    "enable_return_hidden_states": True})) is None


def test_stop_adapter_refused_at_load_on_a_bad_server(made, fresh_state, monkeypatch):
    """The LoRA-manager hook: at start-up this failure stops the launch, naming the flag."""
    calls = []

    def original(manager, ref):
        calls.append(ref.lora_name)
        return SimpleNamespace(success=True)

    manager = SimpleNamespace(create_lora_update_result=lambda success, error_message="": SimpleNamespace(
        success=success, error_message=error_message))
    ref = SimpleNamespace(lora_name="stop", lora_path=str(made.a1))
    monkeypatch.setattr(plugin, "_server_args", lambda: SimpleNamespace(**{**GOOD, "page_size": 64}))
    res = plugin._lora_load(original, manager, ref)
    assert not res.success and res.error_message.startswith("--page-size 64") and not calls
    assert not state.stop_token_ids()

    monkeypatch.setattr(plugin, "_server_args", lambda: SimpleNamespace(**GOOD))
    assert plugin._lora_load(original, manager, ref).success and calls == ["stop"]
    assert state.stop_token_ids() == {made.id1}


def test_shared_secret_makes_every_node_agree(monkeypatch):
    """Two launchers (nodes) draw different per-launch keys; with SGLANG_STOP_SECRET they use one."""
    monkeypatch.delenv(plugin.SECRET_ENV, raising=False)
    keys = []
    for _ in range(2):  # each node's launcher starts without an inherited key
        monkeypatch.setenv(plugin.KEY_ENV, "")
        keys.append(plugin.internal_key())
    assert keys[0] != keys[1]
    monkeypatch.setenv(plugin.SECRET_ENV, "s3cret-shared")
    shared = []
    for _ in range(2):
        monkeypatch.setenv(plugin.KEY_ENV, "")
        shared.append(plugin.internal_key())
    assert shared[0] == shared[1] and "s3cret-shared" not in shared[0]
    req = SimpleNamespace()  # a scheduler on either node drops the adapter namespace for it
    plugin._req_init(lambda self, **kw: self.__dict__.update(lora_id="L", extra_key=kw["extra_key"],
                                                              skip_radix_cache_insert=False),
                     req, extra_key=shared[1])
    assert req.extra_key is None and req.skip_radix_cache_insert


def _record_generates(monkeypatch, hidden: int):
    sent: list[dict] = []

    async def fake_generate(tm, request, **kwargs):
        sent.append(kwargs)
        return [{"meta_info": {"hidden_states": [[0.5] * hidden], "cached_tokens": len(ids) - tiny.K_STOP}}
                for ids in kwargs["input_ids"]]

    monkeypatch.setattr(routes, "_generate", fake_generate)
    return sent


@pytest.mark.parametrize("dp, given, want", [(1, None, None), (4, 3, 3), (4, None, "picked")])
def test_commit_and_score_pinned_to_one_replica(dp, given, want, monkeypatch):
    sent = _record_generates(monkeypatch, tiny.HIDDEN)
    tm = SimpleNamespace(server_args=SimpleNamespace(**{**GOOD, "dp_size": dp}))
    cfg = SimpleNamespace(stop_token_id=99, num_stop_tokens=tiny.K_STOP, positive_label=1)
    body = routes.ScoreRequest(input_ids=[[1, 2, 3], [4, 5]], routed_dp_rank=given)
    w, b = torch.zeros(2, tiny.HIDDEN), torch.zeros(2)
    scores, _ = asyncio.run(routes._score_once(tm, None, body, cfg, w, b))
    assert scores == [0.5, 0.5]
    commit, score = sent
    assert commit["routed_dp_rank"] == score["routed_dp_rank"]
    rank = score["routed_dp_rank"]
    assert rank == want if want != "picked" else 0 <= rank < dp
    assert score["return_hidden_states"] == "last" and "return_hidden_states" not in commit
    if want == "picked":  # stable: the next stage's scoring of this problem goes to the same replica
        sent.clear()
        asyncio.run(routes._score_once(tm, None, body, cfg, w, b))
        assert sent[0]["routed_dp_rank"] == rank


def test_routed_dp_rank_is_checked(monkeypatch):
    tm = SimpleNamespace(server_args=SimpleNamespace(**{**GOOD, "dp_size": 2}))
    with pytest.raises(routes.ScoreError, match=r"^routed_dp_rank: 2 out of range \[0, 2\)"):
        routes.dp_rank(tm, routes.ScoreRequest(input_ids=[[1]], routed_dp_rank=2))
    with pytest.raises(Exception, match="routed_dp_rank"):
        routes.ScoreRequest.model_validate_json('{"input_ids": [[1]], "routed_dp_rank": "1"}')
    with pytest.raises(routes.ScoreError, match="^--page-size 4"):
        routes.check_server(SimpleNamespace(server_args=SimpleNamespace(**{**GOOD, "page_size": 4})))


@pytest.mark.parametrize(
    "hs", [[1.0, 2.0], [[1.0, 2.0]], [[[0.0, 0.0], [1.0, 2.0]]], [[[0.0, 0.0], [1.0, 2.0]], [9.0, 9.0]]]
)
def test_last_hidden_reads_every_reply_shape(hs):
    """"last" mode replies with the row itself; a full-mode server with the prefill rows (+ decode rows)."""
    assert routes._last_hidden({"hidden_states": hs}) == [1.0, 2.0]


def test_hidden_states_of_another_size_are_refused(monkeypatch):
    """EAGLE3-style packed aux hidden states (3 x hidden) must not reach the head as if final-norm."""
    async def fake_generate(tm, request, **kwargs):
        return [{"meta_info": {"hidden_states": [0.5] * (3 * tiny.HIDDEN), "cached_tokens": 3}}
                for _ in kwargs["input_ids"]]

    monkeypatch.setattr(routes, "_generate", fake_generate)
    tm = SimpleNamespace(server_args=SimpleNamespace(**GOOD))
    cfg = SimpleNamespace(stop_token_id=99, num_stop_tokens=tiny.K_STOP, positive_label=1)
    body = routes.ScoreRequest(input_ids=[[1, 2, 3]])
    with pytest.raises(routes.ScoreError, match=f"hidden states of {3 * tiny.HIDDEN} values"):
        asyncio.run(routes._score_once(tm, None, body, cfg, torch.zeros(2, tiny.HIDDEN), torch.zeros(2)))
