"""STOP scorer: KV-reuse scoring equals a from-scratch peft reference; checkpoints; registry."""

from __future__ import annotations

import copy
import json
import random

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from sglang_stop.backends.base import PrefixKV
from sglang_stop.errors import UserError
from sglang_stop.scorers import Branch, ScoreContext, make_scorer
from sglang_stop.scorers.stop import StopNet, StopNetConfig, decoder_of, load_checkpoint, save_checkpoint

K = 3


def tiny_model(hidden: int = 32, layers: int = 2, vocab: int = 40, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=64, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    return tiny_model()


def random_net(model, mode: str = "adapter", seed: int = 1) -> StopNet:
    torch.manual_seed(seed)
    net = StopNet(StopNetConfig(num_assess_tokens=K, mode=mode, lora_r=4, lora_alpha=8, lora_dropout=0.0), model)
    with torch.no_grad():
        for b in net.lora_B:  # B = 0 at init would make the adapter a no-op: randomise it
            b.normal_(0, 0.3)
        net.assess_embedding.normal_(0, 1)
    return net.eval()


def prefixes(n: int = 4, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(40) for _ in range(rng.randint(3, 12))] for _ in range(n)]


def prefix_kv(model, ids: list[int]) -> PrefixKV:
    """What a backend holds: the base model's cache of one branch, alone (no padding)."""
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), use_cache=True)
    return PrefixKV(token_ids=ids, past=tuple((lay.keys, lay.values) for lay in out.past_key_values.layers))


def peft_reference(model, ckpt, ids: list[int], lora_on_prefix: bool = False) -> torch.Tensor:
    """From scratch with real peft: prefix with base weights (adapter disabled), then [STOP] x k with LoRA."""
    from peft import PeftModel

    pm = PeftModel.from_pretrained(copy.deepcopy(model), str(ckpt / "adapter" / "classifier")).eval()
    net = load_checkpoint(ckpt, model)
    inner = pm.base_model.model  # LlamaForCausalLM with LoRA layers
    with torch.no_grad():
        if lora_on_prefix:
            out = inner(input_ids=torch.tensor([ids]), use_cache=True)
        else:
            with pm.disable_adapter():
                out = inner(input_ids=torch.tensor([ids]), use_cache=True)
        emb = net.assess_embedding.view(1, 1, -1).expand(1, K, -1)
        pos = torch.arange(len(ids), len(ids) + K).unsqueeze(0)
        h = decoder_of(inner)(inputs_embeds=emb, past_key_values=out.past_key_values, position_ids=pos).last_hidden_state
        return torch.softmax(net.head(h[:, -1]), -1)[0, 1]


def test_kv_reuse_equals_from_scratch_reference(model, tmp_path):
    ckpt = save_checkpoint(tmp_path / "ckpt", random_net(model), model)
    net = load_checkpoint(ckpt, model)
    ps = prefixes()
    with torch.no_grad():
        batched = torch.softmax(net.logits_from_prefix_kvs(model, [prefix_kv(model, p) for p in ps]), -1)[:, 1]
        training_path = torch.softmax(net.logits_from_ids(model, ps), -1)[:, 1]
    ref = torch.stack([peft_reference(model, ckpt, p) for p in ps])
    whole = torch.stack([peft_reference(model, ckpt, p, lora_on_prefix=True) for p in ps])
    assert torch.allclose(batched, ref, atol=1e-5), (batched, ref)
    assert torch.allclose(training_path, ref, atol=1e-5), (training_path, ref)
    assert (whole - ref).abs().max() > 1e-3, "LoRA on the prefix should change the score"


def test_staged_cache_reads_branch_kv_only_and_trains_like_it_scores(model):
    """Inference stages every layer's padded batch in one shared buffer; with grad each layer gets its
    own (autograd keeps them): both give the same logits, the branches' caches stay as they were, and
    the gradient reaches the [STOP] embedding."""
    net = random_net(model)
    kvs = [prefix_kv(model, p) for p in prefixes(5, seed=3)]
    before = [[t.clone() for kv_layer in kv.past for t in kv_layer] for kv in kvs]
    with torch.no_grad():
        scored = net.logits_from_prefix_kvs(model, kvs)
    trained = net.logits_from_prefix_kvs(model, kvs)
    trained[:, 1].sum().backward()
    assert torch.allclose(scored, trained.detach(), atol=1e-6)
    assert net.assess_embedding.grad is not None and net.assess_embedding.grad.abs().sum() > 0
    for kv, old in zip(kvs, before):
        assert all(torch.equal(t, o) for t, o in zip((t for kv_layer in kv.past for t in kv_layer), old))


def test_lora_hooks_leave_model_untouched(model):
    net = random_net(model)
    ids = torch.tensor([prefixes(1)[0]])
    with torch.no_grad():
        before = model(input_ids=ids).logits
        net.logits_from_ids(model, [ids[0].tolist()])
        after = model(input_ids=ids).logits
    assert torch.equal(before, after)
    assert not any(m._forward_hooks for m in model.modules())
    assert not any("forward" in m.__dict__ for m in model.modules())  # the merged path's patch is gone too


def test_merged_inference_equals_hooks_and_follows_weight_updates(model):
    """Inference (fp32 CPU) runs merged LoRA weights; training runs hooks: the same scores, and an
    in-place update of the adapter (an optimizer step, a checkpoint load) is seen by the next call."""
    net = random_net(model)
    ps = prefixes()
    hooked = net.logits_from_ids(model, ps).detach()  # grad enabled: the hooks
    with torch.no_grad():
        merged = net.logits_from_ids(model, ps)
        assert "_merged_weights" in net.__dict__ and "_merged_weights" not in str(net.state_dict().keys())
        assert torch.allclose(merged, hooked, atol=1e-5)
        net.lora_B[0].mul_(3.0)
        updated = net.logits_from_ids(model, ps)
    assert not torch.allclose(updated, merged, atol=1e-4)
    assert torch.allclose(updated, net.logits_from_ids(model, ps).detach(), atol=1e-5)


def test_no_adapter_is_linear_probe_on_last_hidden(model, tmp_path):
    net = load_checkpoint(save_checkpoint(tmp_path / "probe", random_net(model, "no_adapter"), model), model)
    assert net.cfg.mode == "no_adapter" and not (tmp_path / "probe" / "adapter").exists()
    ps = prefixes()
    with torch.no_grad():
        got = net.logits_from_prefix_kvs(model, [prefix_kv(model, p) for p in ps])
        via_ids = net.logits_from_ids(model, ps)
        want = torch.cat([net.head(decoder_of(model)(input_ids=torch.tensor([p])).last_hidden_state[:, -1]) for p in ps])
    assert torch.allclose(got, want, atol=1e-5) and torch.allclose(via_ids, want, atol=1e-5)


def test_checkpoint_layout_atomic_and_model_check(model, tmp_path):
    from sglang_stop.testbed.tokenizer import build_tokenizer

    dest = tmp_path / "ckpt"
    save_checkpoint(dest, random_net(model), model, tokenizer=build_tokenizer(), training={"epochs": 1})
    save_checkpoint(dest, random_net(model, seed=2), model)  # overwrite in place
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"ckpt"}, names  # no temp or old dirs left behind
    for f in ("adapter/classifier/adapter_config.json", "adapter/classifier/adapter_model.safetensors", "classifier_head.pth",
              "assess_token_embedding.pth", "assess_token_config.json"):
        assert (dest / f).is_file(), f
    meta = json.loads((dest / "assess_token_config.json").read_text())
    assert meta["num_assess_tokens"] == K and meta["base_model"]["hidden_size"] == 32
    save_checkpoint(tmp_path / "tok", random_net(model), model, tokenizer=build_tokenizer())
    assert (tmp_path / "tok" / "tokenizer" / "tokenizer.json").is_file()
    with pytest.raises(UserError, match="num_hidden_layers"):
        load_checkpoint(dest, tiny_model(layers=3))
    with pytest.raises(UserError, match="hidden_size"):
        load_checkpoint(dest, tiny_model(hidden=48))
    with pytest.raises(UserError, match="assess_token_config.json"):
        load_checkpoint(tmp_path, model)


class FakeBackend:
    """Holds branches' caches like a backend; calls fn on 'its thread'."""

    def __init__(self, model, caches):
        self.model, self.caches = model, caches

    def with_prefix_kv(self, handles, fn):
        return fn(self.model, [self.caches[h] for h in handles])


def test_registered_scorer_uses_backend_kv(model, tmp_path):
    ckpt = save_checkpoint(tmp_path / "ckpt", random_net(model), model)
    ps = prefixes(5)
    backend = FakeBackend(model, {i: prefix_kv(model, p) for i, p in enumerate(ps)})
    branches = [Branch(i, p[:2], p[2:], "", [], [], [], handle=i) for i, p in enumerate(ps)]
    scorer = make_scorer("stop", {"checkpoint": str(ckpt), "batch_size": 2})
    got = scorer.score(branches, ScoreContext(backend=backend, rng=random.Random(0)))
    ref = [float(peft_reference(model, ckpt, p)) for p in ps]
    assert got == pytest.approx(ref, abs=1e-5)
    with pytest.raises(UserError, match="batch_size"):
        make_scorer("stop", {"checkpoint": str(ckpt), "batch_size": 0})


def test_committed_testbed_checkpoint_scores_testbed_model():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sglang_stop.testbed import asset_dir, stop_asset_dir

    model = AutoModelForCausalLM.from_pretrained(asset_dir()).eval()
    tok = AutoTokenizer.from_pretrained(asset_dir())
    texts = ["Q4-8-8+3=4-8=-4;-4-8=-12;", "Q4-8-8+3=4-8=-4;-4-8=-11;", "Q1+2+3+4=1+2=3;"]
    ids = [tok(t)["input_ids"] for t in texts]
    backend = FakeBackend(model, {i: prefix_kv(model, p) for i, p in enumerate(ids)})
    branches = [Branch(i, p, [], "", [], [], [], handle=i) for i, p in enumerate(ids)]
    scores = make_scorer("stop", {"checkpoint": str(stop_asset_dir())}).score(
        branches, ScoreContext(backend=backend, rng=random.Random(0))
    )
    assert len(scores) == 3 and all(0.0 < s < 1.0 for s in scores)
    with pytest.raises(UserError, match="hidden_size"):
        load_checkpoint(stop_asset_dir(), tiny_model())
