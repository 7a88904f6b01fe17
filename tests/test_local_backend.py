"""The in-process backend against plain Hugging Face references: padded continuous batching must not
change a single token or KV value, and continuing a branch must never re-encode its prefix."""

from __future__ import annotations

import re

import pytest
import sglang as sgl
import torch

from sglang_stop.backends.local import LocalBackend
from sglang_stop.config import RuntimeConfig
from sglang_stop.program import parallel_reasoning
from sglang_stop.scorers import make_scorer


def last_digit(text: str) -> str | None:
    found = re.findall(r"\d", text)
    return found[-1] if found else None


@pytest.fixture()
def backend(tiny_lm):
    model, tok = tiny_lm
    be = LocalBackend(model, tok)
    yield be
    be.shutdown()


def greedy_reference(model, tok, prompt: str, n: int) -> str:
    ids = tok(prompt)["input_ids"]
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model(torch.tensor([ids])).logits[0, -1].argmax())
            ids.append(nxt)
            if nxt == tok.eos_token_id:
                break
    return tok.decode(ids[len(tok(prompt)["input_ids"]) :], skip_special_tokens=True)


@sgl.function
def one_gen(s, prompt, n):
    s += prompt
    s += sgl.gen("out", max_tokens=n, temperature=0.0)


def test_batched_greedy_equals_unbatched_reference(tiny_lm, backend):
    model, tok = tiny_lm
    prompts = ["Q1+2=", "Q9-4-4=5", "abc", "Q1+1+1+1+1+1+1=", "x", "Q7-2=5;5+3="]
    states = one_gen.run_batch([{"prompt": p, "n": 24} for p in prompts], backend=backend, num_threads=len(prompts))
    assert backend.max_batch_seen > 1  # rows of different lengths really decoded together
    for p, st in zip(prompts, states):
        assert st["out"] == greedy_reference(model, tok, p, 24), p


def test_branch_kv_equals_full_recompute(tiny_lm, backend):
    model, tok = tiny_lm
    cfg = RuntimeConfig(n=4, stages=[{"prefix_len": 6, "keep": 2}], sampling={"max_new_tokens": 20, "temperature": 1.0})
    captured = []

    class Capture(make_scorer("random").__class__):
        def score(self, branches, ctx):
            def grab(_model, kvs):
                captured.extend(kvs)
                return None

            ctx.backend.with_prefix_kv([b.handle for b in branches], grab)
            return super().score(branches, ctx)

    parallel_reasoning.run(
        prompt="Q3+4=", cfg=cfg, scorer=Capture(), extract_answer=last_digit, problem_key="kv", backend=backend
    )
    assert captured
    for kv in captured:
        with torch.no_grad():
            ref = model(torch.tensor([kv.token_ids]), use_cache=True).past_key_values
        assert kv.past[0][0].shape[2] == len(kv.token_ids)
        for (k, v), layer in zip(kv.past, ref.layers):
            torch.testing.assert_close(k, layer.keys, atol=1e-5, rtol=0)
            torch.testing.assert_close(v, layer.values, atol=1e-5, rtol=0)


def test_continuing_kept_branches_reencodes_no_prefix_token(tiny_lm, backend):
    _, tok = tiny_lm
    prompt = "Q1+2+3="
    cfg = RuntimeConfig(
        n=8,
        stages=[{"prefix_len": 5, "keep": 4}, {"prefix_len": 10, "keep": 2}],
        sampling={"max_new_tokens": 30, "temperature": 1.0},
    )
    st = parallel_reasoning.run(
        prompt=prompt, cfg=cfg, scorer=make_scorer("confidence"), extract_answer=last_digit, problem_key="p", backend=backend
    )
    res = st.ret_value
    u = backend.usage()
    assert u.reencoded_tokens == 0
    # The shared prompt is encoded once (all but its last token, which each branch feeds itself) ...
    assert u.prompt_tokens == len(tok(prompt)["input_ids"]) - 1
    # ... and every other position fed to the model is a freshly sampled token: nothing twice.
    assert u.forward_tokens == u.prompt_tokens + u.generated_tokens
    assert u.generated_tokens == res.tokens
    assert sum(p.pruned_at == 0 for p in res.paths) == 4 - sum(p.finished and not p.scores for p in res.paths)
    assert backend.live_branches() == 0  # pruned and finished branches released their KV


def test_same_seed_same_paths_pruned_or_not(tiny_lm):
    model, tok = tiny_lm
    base = dict(n=6, sampling={"max_new_tokens": 16, "temperature": 1.0}, seed=7)
    runs = []
    for stages in ([], [{"prefix_len": 4, "keep": 2}]):
        be = LocalBackend(model, tok)
        st = parallel_reasoning.run(
            prompt="Q5-1=", cfg=RuntimeConfig(stages=stages, **base), scorer=make_scorer("random"),
            extract_answer=last_digit, problem_key="same", backend=be,
        )
        be.shutdown()
        runs.append(st.ret_value)
    full, pruned = runs
    for p in pruned.paths:
        ref = full.paths[p.index].text
        assert ref.startswith(p.text) or p.text.startswith(ref[: len(p.text)])
        if p.pruned_at is None:
            assert p.text == ref


def test_stop_string_and_select(tiny_lm, backend):
    model, tok = tiny_lm

    @sgl.function
    def prog(s):
        s += "Q1+2="
        s += sgl.gen("a", max_tokens=30, temperature=0.0, stop=[";"])
        s += sgl.select("c", choices=["A1", "A2", "xyz"])
        s += sgl.gen("b", max_tokens=5, temperature=0.0)

    st = prog.run(backend=backend)
    assert ";" not in st["a"]
    assert st["c"] in {"A1", "A2", "xyz"}
    assert st.text().startswith("Q1+2=" + st["a"] + st["c"])


def test_decode_bench_reports_hf_generate_side_by_side(backend):
    from sglang_stop.bench.decode import decode_text, run_decode_bench

    res = run_decode_bench(backend, "Q1+2=", [1, 3], max_tokens=5)
    assert res.tokens == [5, 15]  # exactly max_tokens per branch (ignore_eos), as HF's min_new_tokens
    assert res.max_batch_seen == 3
    assert res.hf_tokens_per_s is not None and all(x > 0 for x in res.hf_tokens_per_s)
    assert res.vs_hf == pytest.approx([a / b for a, b in zip(res.tokens_per_s, res.hf_tokens_per_s)])
    assert "in-process / HF" in decode_text(res)
    assert backend.usage().reencoded_tokens == 0


def test_decode_profile_splits_the_wall_time(backend):
    from sglang_stop.bench.decode import profile_decode

    prof = profile_decode(backend, "Q1+2=", 3, max_tokens=5)
    assert prof.forward_s > 0 and prof.sample_s > 0
    assert prof.forward_s + prof.sample_s <= prof.wall_s
    assert "forward" not in vars(backend.model) and "_sample_rows" not in vars(backend)  # timers removed
