"""Labels (resumable records), metrics, and a short training run on a tiny random model."""

from __future__ import annotations

import json
import random

import pytest
import torch

from sglang_stop.errors import UserError
from sglang_stop.io import read_header, read_jsonl
from sglang_stop.training.labels import LabelJob, LabelRecord, label_header, label_problems, load_labels
from sglang_stop.training.metrics import auc, vote_accuracy, within_problem_auc


class FakeSampler:
    """Deterministic in (prompt, seed): emits digits; counts rows so tests see what was resampled."""

    def __init__(self):
        self.rows = 0

    def __call__(self, prompts, params, seed):
        self.rows += len(prompts)
        out = []
        for i, p in enumerate(prompts):
            r = random.Random(f"{seed}:{i}:{p}")
            out.append([r.randrange(10) for _ in range(params.max_new_tokens if r.random() > 0.1 else 1)])
        return out


PROBLEMS = [{"id": f"p{i}", "question": f"q{i}", "answer": str(i % 10)} for i in range(5)]


JOB = dict(prefixes=3, continuations=4, prefix_len=2, max_new_tokens=4, problems_per_batch=2)


def run(path, sampler, problems=PROBLEMS, header=None, **job):
    return label_problems(
        problems, path, LabelJob(**{**JOB, **job}),
        sampler, encode_prompt=lambda q: [int(q[1:]) + 20], decode=lambda ids: "".join(map(str, ids)),
        check=lambda prob, t: (t[-1] if t else None, bool(t) and t[-1] == prob["answer"]), header=header,
    )


@pytest.mark.parametrize("key,value", [("prefixes", 2), ("continuations", 8), ("prefix_len", 1),
                                       ("max_new_tokens", 6), ("temperature", 0.5), ("top_p", 0.9), ("top_k", 5),
                                       ("seed", 3)])
def test_labels_resume_with_other_setting_is_refused(tmp_path, key, value):
    out = tmp_path / "l.jsonl"
    run(out, FakeSampler(), PROBLEMS[:2])
    h = read_header(out)
    assert h is not None and h.kind == "labels" and h.settings["continuations"] == 4
    before = out.read_bytes()
    with pytest.raises(UserError, match=f"recorded with {key}="):
        run(out, FakeSampler(), **{key: value})
    assert out.read_bytes() == before  # nothing appended


def test_labels_header_names_task_and_model(tmp_path):
    out = tmp_path / "l.jsonl"
    job = LabelJob(**JOB)
    run(out, FakeSampler(), header=label_header(job, {"name": "a", "weights_hash": "1"}, task="testbed"))
    with pytest.raises(UserError, match="recorded with task=.testbed., this run has task=.chain_sum."):
        run(out, FakeSampler(), header=label_header(job, {"name": "a", "weights_hash": "1"}, task="chain_sum"))
    with pytest.raises(UserError, match="recorded with model"):
        run(out, FakeSampler(), header=label_header(job, {"name": "a", "weights_hash": "2"}, task="testbed"))
    assert run(out, FakeSampler(), header=label_header(job, {"name": "a", "weights_hash": "1"}, task="testbed")) == 0


def test_headerless_labels_are_read_but_not_extended(tmp_path):
    new, old = tmp_path / "new.jsonl", tmp_path / "old.jsonl"
    run(new, FakeSampler(), PROBLEMS[:2])
    old.write_bytes(new.read_bytes().split(b"\n", 1)[1])  # an older file: records, no header
    assert len(load_labels(old)) == len(load_labels(new)) > 0
    with pytest.raises(UserError, match="has no header record"):
        run(old, FakeSampler())


def test_prefix_len_must_leave_room():
    with pytest.raises(UserError, match="--prefix-len 4 must be below --max-new-tokens 4"):
        LabelJob(prefix_len=4, max_new_tokens=4)


def test_labels_resume_skips_done_pairs(tmp_path):
    full, part = tmp_path / "full.jsonl", tmp_path / "part.jsonl"
    n = run(full, FakeSampler())
    recs = list(read_jsonl(full, LabelRecord))
    assert n == len(recs) > 0 and all(r.K == 4 and r.prefix_len == 2 for r in recs)
    for r in recs:  # s_mc is the task's verdict on each continuation, averaged
        assert r.s_mc == sum(a == r.answer for a in r.cont_answers) / r.K
    run(part, FakeSampler(), PROBLEMS[:2])
    with open(part, "ab") as f:
        f.write(b'{"schema_version": 1, "problem_id": "p2"')  # a kill mid-append
    run(part, FakeSampler())
    again = FakeSampler()
    assert run(part, again) == 0
    key = lambda r: (r.problem_id, r.prefix_idx)
    got = sorted(read_jsonl(part, LabelRecord), key=key)
    want = sorted(recs, key=key)
    assert [key(r) for r in got] == [key(r) for r in want]  # every pair once, none lost or doubled
    assert [r.token_ids for r in got] == [r.token_ids for r in want]  # prefixes are seeded per problem


def test_metrics():
    assert auc([1, 2, 3, 4], [False, False, True, True]) == 1.0
    assert auc([1, 1, 1, 1], [False, True, False, True]) == 0.5
    w, n = within_problem_auc(["a"] * 4 + ["b"] * 2 + ["c"] * 2, [1, 2, 3, 4, 5, 6, 1, 2], [0, 0, 1, 1, 1, 1, 1, 0])
    assert n == 2 and w == pytest.approx(0.5)
    groups, truth = ["a"] * 4, {"a": "1"}
    answers = [["1"], ["1"], ["2"], ["2"]]
    assert vote_accuracy(groups, [4, 3, 2, 1], answers, truth, keep=2) == 1.0
    assert vote_accuracy(groups, [1, 2, 3, 4], answers, truth, keep=2) == 0.0


def test_train_writes_best_checkpoint(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from sglang_stop.scorers.stop import load_checkpoint
    from sglang_stop.training.train import TrainConfig, train_stop

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=30, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=4)).eval()
    rng = random.Random(0)
    recs = []
    for p in range(12):
        for i in range(4):
            bad = rng.random() < 0.5  # token 7 in the prefix = a doomed path
            ids = [1] + [rng.randrange(8, 30) for _ in range(rng.randint(3, 8))] + ([7] if bad else [])
            recs.append(LabelRecord(problem_id=f"p{p}", question="q", answer="1", prefix_idx=i, token_ids=ids,
                                    prompt_len=1, prefix_len=len(ids) - 1, prefix_text="", s_mc=0.0 if bad else 1.0,
                                    K=4, cont_lengths=[1] * 4, cont_answers=["1"] * 4, seed=0))
    logs = []
    best = train_stop(model, recs, TrainConfig(epochs=3, lora_r=2, lr=5e-3, val_fraction=0.3), tmp_path / "ck",
                      log=logs.append)
    assert len(logs) == 3 and best["mse"] == min(r["mse"] for r in logs)
    meta = json.loads((tmp_path / "ck" / "assess_token_config.json").read_text())
    assert meta["training"]["best"]["epoch"] == best["epoch"]
    load_checkpoint(tmp_path / "ck", model)


def test_label_and_train_json_on_the_testbed(tmp_path):
    """`label --json` / `train --json`: stdout is exactly one JSON object; the labels file has a header with
    the testbed's identity, and the checkpoint loads onto the testbed without a warning."""
    from click.testing import CliRunner

    from sglang_stop.cli import cli

    labels, ck = tmp_path / "l.jsonl", tmp_path / "ck"
    r = CliRunner().invoke(cli, ["label", "--problems", "12", "-P", "2", "-K", "2", "--prefix-len", "6",
                                 "--max-new-tokens", "20", "--out", str(labels), "--json"])
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["written"] == out["records"] == len(load_labels(labels)) > 0
    assert "label problems" in r.stderr  # the labelled progress bar
    h = read_header(labels)
    assert h.model["name"] == "testbed" and h.settings["prefix_len"] == 6 and h.settings["split"] == "label"
    r = CliRunner().invoke(cli, ["train", "--labels", str(labels), "--out", str(ck), "--epochs", "1", "--lora-r", "2",
                                 "--rank-weight", "1", "--json"])
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["out"] == str(ck) and out["best"]["epoch"] == 1 and "epoch 1:" in r.stderr
    meta = json.loads((ck / "assess_token_config.json").read_text())
    assert meta["base_model"]["weights_hash"] == h.model["weights_hash"]
    assert meta["training"]["config"]["rank_weight"] == 1.0  # problem-packed batches with the pairwise loss


def test_train_recuts_whole_path_labels_at_a_later_prune_point(tmp_path):
    """`train --prefix-len`: whole paths (-K 1) are trained on at a later prune point (as `bench signals
    --prefix-len` judges them); Monte Carlo labels (K > 1) cannot be re-cut: one line, exit 2."""
    from click.testing import CliRunner

    from sglang_stop.cli import cli

    paths, mc, ck = tmp_path / "paths.jsonl", tmp_path / "mc.jsonl", tmp_path / "ck"
    for out, k in ((paths, "1"), (mc, "2")):
        r = CliRunner().invoke(cli, ["label", "--problems", "12", "-P", "3", "-K", k, "--prefix-len", "4",
                                     "--max-new-tokens", "24", "--out", str(out), "--json"])
        assert r.exit_code == 0, r.stderr
    r = CliRunner().invoke(cli, ["train", "--labels", str(paths), "--out", str(ck), "--epochs", "1", "--lora-r", "2",
                                 "--prefix-len", "8", "--json"])
    assert r.exit_code == 0, r.stderr
    meta = json.loads((ck / "assess_token_config.json").read_text())
    assert meta["training"]["prefix_lens"] == [8]
    r = CliRunner().invoke(cli, ["train", "--labels", str(mc), "--out", str(tmp_path / "ck2"), "--prefix-len", "8"])
    assert isinstance(r.exception, UserError) and "is not a whole path" in str(r.exception)  # main: one line, exit 2


def test_problems_jsonl_rows_checked_and_ids_as_strings(tmp_path):
    from sglang_stop.training.cli import _read_problems_jsonl

    f = tmp_path / "p.jsonl"
    f.write_text('{"id": 1, "question": "Q1+2=", "answer": 3}\n\n{"id": "b", "question": "Q2+2=", "answer": "4"}')
    rows = _read_problems_jsonl(str(f))
    assert [(r["id"], r["answer"]) for r in rows] == [("1", "3"), ("b", "4")]  # last line kept without a newline
    f.write_text('{"id": 1, "question": 5, "answer": 3}\n')
    with pytest.raises(UserError, match="p.jsonl:1: question: Input should be a valid string"):
        _read_problems_jsonl(str(f))
    with pytest.raises(UserError, match="nope.jsonl: file not found"):
        _read_problems_jsonl(str(tmp_path / "nope.jsonl"))


def test_hf_sampler_shares_the_common_prompt_and_matches_plain_generate():
    """Rows of one prompt: its cache is encoded once and shared; greedy output equals generate per row,
    whatever the row order or a second prompt of another length in the same call."""
    from sglang_stop.models import load_model
    from sglang_stop.testbed import asset_dir
    from sglang_stop.training.hf_sampler import HFSampler, SampleParams

    m, tok = load_model(str(asset_dir()), device="cpu", dtype="float32")
    p = tok("Q3+4-2=", add_special_tokens=False)["input_ids"]
    q = tok("Q9-8+1-5=", add_special_tokens=False)["input_ids"]
    got = HFSampler(m, tok.eos_token_id, tok.pad_token_id)([p, q, p, q + [5]], SampleParams(temperature=0, max_new_tokens=30), 0)

    def plain(ids):
        out = m.generate(input_ids=torch.tensor([ids]), max_new_tokens=30, do_sample=False,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)[0, len(ids):].tolist()
        return out[: out.index(tok.eos_token_id)] if tok.eos_token_id in out else out

    assert got == [plain(p), plain(q), plain(p), plain(q + [5])]


def test_best_epoch_selection_breaks_within_auc_ties_by_mse():
    from sglang_stop.training.train import selection_key

    flat = [{"within_auc": 0.5, "mse": m} for m in (0.12, 0.09, 0.11)]  # too few mixed problems: AUC ties
    assert min(range(3), key=lambda i: selection_key(flat[i], "within_auc")) == 1
    ranked = [{"within_auc": 0.7, "mse": 0.2}, {"within_auc": 0.6, "mse": 0.05}]
    assert min(range(2), key=lambda i: selection_key(ranked[i], "within_auc")) == 0
    assert min(range(2), key=lambda i: selection_key(ranked[i], "mse")) == 1


def test_within_rank_loss_ranks_only_within_a_problem():
    """RankNet on log-odds: pairs of one problem with s_i > s_j, weighted by s_i - s_j; other problems'
    pairs (the difficulty a pooled loss learns) do not count."""
    import torch.nn.functional as F

    from sglang_stop.training.train import within_rank_loss

    m = torch.tensor([2.0, 0.5, -1.0, 3.0], requires_grad=True)
    s = torch.tensor([1.0, 0.25, 0.0, 0.0])
    loss = within_rank_loss(m, s, ["a", "a", "b", "b"])  # one pair: a's first above a's second, weight 0.75
    assert loss.item() == pytest.approx(F.softplus(torch.tensor(0.5 - 2.0)).item())
    loss.backward()
    assert m.grad[0] < 0 < m.grad[1] and m.grad[2] == m.grad[3] == 0  # descent widens a's gap, b is untouched
    flat = within_rank_loss(m, torch.tensor([1.0, 0.0, 1.0, 0.0]), ["a", "b", "c", "d"])
    assert flat.item() == 0.0 and flat.requires_grad
    # weights: b's pair (s gap 1.0) counts four times a's (0.25)
    two = within_rank_loss(torch.tensor([0.0, 0.0, 1.0, -1.0]), torch.tensor([0.5, 0.25, 1.0, 0.0]), ["a"] * 2 + ["b"] * 2)
    want = (0.25 * F.softplus(torch.tensor(0.0)) + 1.0 * F.softplus(torch.tensor(-2.0))) / 1.25
    assert two.item() == pytest.approx(want.item())


def test_problem_batches_keep_problems_whole():
    from sglang_stop.training.train import problem_batches

    recs = [LabelRecord(problem_id=f"p{p}", question="q", answer="1", prefix_idx=i, token_ids=[1, 2], prompt_len=1,
                        prefix_len=1, prefix_text="", s_mc=0.5, K=1, cont_lengths=[1], cont_answers=["1"], seed=0)
            for p, n in enumerate([3, 4, 2, 9, 1]) for i in range(n)]
    batches = problem_batches(recs, 6, random.Random(0))
    assert sorted(id(r) for b in batches for r in b) == sorted(id(r) for r in recs)
    for b in batches:
        assert len(b) <= 6 or len({r.problem_id for r in b}) == 1  # the 9-prefix problem alone
    seen = [{r.problem_id for r in b} for b in batches]
    assert all(not (x & y) for i, x in enumerate(seen) for y in seen[i + 1:])  # no problem split across batches
    assert problem_batches(recs, 6, random.Random(1)) != batches  # shuffled per epoch


def test_prompt_shared_kv_equals_whole_prefix_encoding_and_stores_each_prompt_once():
    from transformers import LlamaConfig, LlamaForCausalLM

    from sglang_stop.scorers.stop import decoder_of
    from sglang_stop.training.train import PromptSharedKV

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=30, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2)).eval()
    prompt = [1, 5, 9, 11, 4]

    def rec(i, ids, prompt_len):
        return LabelRecord(problem_id="p", question="q", answer="1", prefix_idx=i, token_ids=ids, prompt_len=prompt_len,
                           prefix_len=len(ids) - prompt_len, prefix_text="", s_mc=0.5, K=1, cont_lengths=[1],
                           cont_answers=["1"], seed=0)

    recs = [rec(0, prompt + [7, 8, 20], 5), rec(1, prompt + [3, 21], 5), rec(2, [2, 6, 6], 0),
            rec(3, prompt + [9, 9, 2], 5)]
    store = PromptSharedKV(model)
    store.add_many(recs[:2])
    store.add(recs[2])
    store.add_many(recs[3:])  # the prompt is not encoded again
    assert len(store.prompts) == 1  # the prefixes of one prompt share it
    batched = PromptSharedKV(model)
    batched.add_many([recs[0], recs[3]])  # same prompt, same suffix length: one forward of two rows
    for r in recs:
        with torch.no_grad():
            whole = decoder_of(model)(input_ids=torch.tensor([r.token_ids]), use_cache=True).past_key_values
        got = store.get(r)
        assert got.token_ids == r.token_ids
        for (k, v), layer in zip(got.past, whole.layers):
            assert k.shape == layer.keys.shape and torch.allclose(k, layer.keys, atol=1e-5)
            assert torch.allclose(v, layer.values, atol=1e-5)
    for r in (recs[0], recs[3]):
        for (k, v), (k2, v2) in zip(batched.get(r).past, store.get(r).past):
            assert k.shape == k2.shape and torch.allclose(k, k2, atol=1e-5) and torch.allclose(v, v2, atol=1e-5)


def test_probe_features_are_what_the_no_adapter_net_reads_at_inference():
    from transformers import LlamaConfig, LlamaForCausalLM

    from sglang_stop.scorers.stop import StopNet, StopNetConfig
    from sglang_stop.training.train import PromptSharedKV, probe_features

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=30, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2)).eval()
    recs = [LabelRecord(problem_id="p", question="q", answer="1", prefix_idx=i, token_ids=ids, prompt_len=3,
                        prefix_len=len(ids) - 3, prefix_text="", s_mc=0.5, K=1, cont_lengths=[1], cont_answers=["1"],
                        seed=0) for i, ids in enumerate([[1, 5, 9, 7, 8], [1, 5, 9, 3, 21, 4, 6]])]
    net = StopNet(StopNetConfig(mode="no_adapter"), model).eval()
    store = PromptSharedKV(model)
    store.add_many(recs)
    with torch.no_grad():
        want = net.logits_from_prefix_kvs(model, [store.get(r) for r in recs])  # the scorer's path
        got = net.head(probe_features(model, recs))
    assert torch.allclose(got, want, atol=1e-5)
