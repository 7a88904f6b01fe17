"""Monte Carlo labels sampled on the real SGLang server (ServerSampler) against the in-process HF sampler:
the same labels under greedy sampling, the same s_mc distribution at T=1 (two-sample tests), and the
continuations' inputs served from the radix cache."""

from __future__ import annotations

import json

import pytest
import torch

pytestmark = pytest.mark.server

PROBLEMS = [{"id": f"p{i}", "question": q, "answer": "0"} for i, q in enumerate(
    ["Q5-9-5-7+7=", "Q1+2+3=", "Q8-1-4=", "Q2+2+9-3=", "Q7-3+5=", "Q9+9-1=", "Q4-4+6=", "Q3+8-2="])]


def _check(_p: dict, text: str) -> tuple[str | None, bool]:
    """An outcome of about even odds on the tiny random model, depending on prefix and continuation."""
    return str(text.count("e")), text.count("e") % 2 == 0


def _label(sampler, tok, out, job):
    from sglang_stop.training.labels import label_problems, load_labels

    label_problems(PROBLEMS, out, job, sampler, encode_prompt=lambda q: list(tok(q)["input_ids"]),
                   decode=lambda ids: tok.decode(ids, skip_special_tokens=True), check=_check)
    return load_labels(out)


@pytest.fixture(scope="module")
def samplers(server, artifacts):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sglang_stop.backends.fleet import Fleet
    from sglang_stop.training.hf_sampler import HFSampler
    from sglang_stop.training.server_sampler import ServerSampler

    model = AutoModelForCausalLM.from_pretrained(artifacts.model, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(artifacts.model)
    remote = ServerSampler(Fleet(workers=[server.url]))
    yield HFSampler(model, tok.eos_token_id, tok.pad_token_id), remote, tok
    remote.shutdown()


def test_greedy_labels_equal_in_process(samplers, tmp_path):
    from sglang_stop.training.labels import LabelJob

    local, remote, tok = samplers
    job = LabelJob(prefixes=1, continuations=2, prefix_len=6, max_new_tokens=14, temperature=0.0)
    a = _label(local, tok, tmp_path / "local.jsonl", job)
    b = _label(remote, tok, tmp_path / "server.jsonl", job)
    assert len(a) == len(PROBLEMS)
    key = [(r.problem_id, r.token_ids, r.cont_lengths, r.cont_answers, r.s_mc) for r in a]
    assert [(r.problem_id, r.token_ids, r.cont_lengths, r.cont_answers, r.s_mc) for r in b] == key


def test_sampled_s_mc_matches_in_process_and_reuses_the_prefix_cache(samplers, tmp_path):
    """At T=1 the two samplers use different RNGs (the server honours sampling_seed only with
    --enable-deterministic-inference), so the check is distributional: KS on the per-prefix s_mc and a
    two-proportion z-test on the pooled continuation outcomes, each at a 0.001 level."""
    from scipy.stats import ks_2samp, norm

    from sglang_stop.training.labels import LabelJob

    local, remote, tok = samplers
    job = LabelJob(prefixes=4, continuations=8, prefix_len=6, max_new_tokens=14, temperature=1.0)
    before = remote.stats.model_copy()
    a = _label(local, tok, tmp_path / "local.jsonl", job)
    b = _label(remote, tok, tmp_path / "server.jsonl", job)
    sa, sb = [r.s_mc for r in a], [r.s_mc for r in b]
    ks = ks_2samp(sa, sb)
    ka, kb = sum(s * r.K for s, r in zip(sa, a)), sum(s * r.K for s, r in zip(sb, b))
    na, nb = sum(r.K for r in a), sum(r.K for r in b)
    pool = (ka + kb) / (na + nb)
    z = (ka / na - kb / nb) / max(1e-9, (pool * (1 - pool) * (1 / na + 1 / nb)) ** 0.5)
    cached = remote.stats.cached_tokens - before.cached_tokens
    inputs = remote.stats.input_tokens - before.input_tokens
    reqs = remote.stats.requests - before.requests
    print(json.dumps({"prefixes": [len(a), len(b)], "mean_s_mc": [sum(sa) / len(sa), sum(sb) / len(sb)],
                      "ks_p": ks.pvalue, "z": z, "z_p": 2 * norm.sf(abs(z)),
                      "cache": {"requests": reqs, "input_tokens": inputs, "cached_tokens": cached,
                                "fraction": cached / inputs, "of_reusable": cached / (inputs - reqs)}}))
    assert min(len(a), len(b)) >= 0.75 * len(PROBLEMS) * job.prefixes  # a prefix that hit EOS early is dropped
    assert 0.1 < sum(sa) / len(sa) < 0.9  # the outcome is not degenerate, so the tests can see a difference
    assert ks.pvalue >= 1e-3, (sa, sb)
    assert 2 * norm.sf(abs(z)) >= 1e-3, (ka, na, kb, nb)
    # SGLang always recomputes an input's last token (for its next-token logits), so a cached prefix of
    # L tokens gives cached_tokens == L - 1; the rest must all come from the cache.
    assert cached / inputs >= 0.9
    assert cached == inputs - reqs


def test_cli_label_on_server_resumes_without_duplicates(server, tmp_path):
    from click.testing import CliRunner

    from sglang_stop.cli import cli
    from sglang_stop.training.labels import load_labels

    out = tmp_path / "labels.jsonl"
    args = ["label", "--server", server.url, "--problems", "3", "-P", "2", "-K", "3", "--prefix-len", "6",
            "--max-new-tokens", "12", "--out", str(out), "--json"]
    first = CliRunner().invoke(cli, [*args[:4], "2", *args[5:]])  # 2 problems, then resumed with 3
    assert first.exit_code == 0, first.output
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    got = json.loads(res.output[res.output.index("{"):])
    recs = load_labels(out)
    pairs = [(r.problem_id, r.prefix_idx) for r in recs]
    assert len(pairs) == len(set(pairs)) == got["records"]
    first_records = json.loads(first.output[first.output.index("{"):])["records"]
    assert got["written"] == got["records"] - first_records  # the resumed run only adds the third problem
    assert got["cache"]["fraction"] >= 0.9
