"""`bench signals`: the teacher-forced views equal a plain forward, STOP over the shared-prompt KV equals
STOP re-encoding the prefix, and the pruning / online replays follow the runtime's rules."""

from __future__ import annotations

import json
import random

import pytest
import torch

from sglang_stop.backends.base import Branch
from sglang_stop.bench.signals import Paths, replay_keep, replay_online, stop_fn, teacher_force
from sglang_stop.training.labels import LabelRecord, load_labels


@pytest.fixture(scope="module")
def testbed_labels(tmp_path_factory):
    from click.testing import CliRunner

    from sglang_stop.cli import cli

    out = tmp_path_factory.mktemp("sig") / "eval.jsonl"
    r = CliRunner().invoke(cli, ["label", "--split", "eval", "--problems", "10", "-P", "6", "-K", "2",
                                 "--prefix-len", "12", "--max-new-tokens", "40", "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def testbed_model():
    from sglang_stop.models import load_model
    from sglang_stop.testbed import asset_dir

    return load_model(str(asset_dir()), device="cpu", dtype="float32")


def _groups(records):
    by: dict[str, list] = {}
    for r in records:
        by.setdefault(r.problem_id, []).append(r)
    return list(by.values())


def test_teacher_forced_views_and_stop_scores_match_a_plain_forward(testbed_labels, testbed_model):
    from sglang_stop.scorers.stop import load_checkpoint
    from sglang_stop.testbed import stop_asset_dir
    from sglang_stop.training.train import predict

    model, tok = testbed_model
    group = _groups(load_labels(testbed_labels))[0]
    assert all(r.cont_token_ids and len(r.cont_token_ids) == r.K == 2 for r in group)
    paths = teacher_force(model, group, tok.pad_token_id or 0)
    for (i, j), b in paths.full.items():
        r = group[i]
        ids = r.token_ids + r.cont_token_ids[j]
        assert b.generated_ids == ids[r.prompt_len :]
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, r.prompt_len - 1 : -1].float(), -1)
        ref = lp[torch.arange(len(b.generated_ids)), torch.tensor(b.generated_ids)]
        assert torch.allclose(torch.tensor(b.logprobs), ref, atol=1e-4)
        assert torch.allclose(torch.tensor([t[0] for t in b.top_logprobs]), lp.max(-1).values, atol=1e-4)
    via_kv = stop_fn(str(stop_asset_dir()), model)(paths)
    reencoded = predict(load_checkpoint(str(stop_asset_dir()), model), model, group)
    assert via_kv == pytest.approx(reencoded, abs=1e-4)


def _path(tokens_conf: list[float]) -> Branch:
    return Branch(0, [1], list(range(len(tokens_conf))), "", [0.0] * len(tokens_conf),
                  [[-c] * 20 for c in tokens_conf], [0.0] * len(tokens_conf))


def _paths(answers: list[str | None], lengths: list[int], confs: list[list[float]] | None = None) -> Paths:
    recs = [LabelRecord(problem_id="p", question="q", answer="7", prefix_idx=i, token_ids=[1, 2, 3], prompt_len=1,
                        prefix_len=2, prefix_text="..", s_mc=float(a == "7"), K=1, cont_lengths=[n], cont_answers=[a],
                        seed=0) for i, (a, n) in enumerate(zip(answers, lengths))]
    p = Paths(recs)
    for i, c in enumerate(confs or [[1.0] * n for n in lengths]):
        p.full[(i, 0)] = _path(c)
    return p


def test_keep_replay_votes_the_kept_paths_and_counts_their_tokens():
    p = _paths(["7", "3", "3", "7"], [10, 20, 30, 40])
    rng = random.Random(0)
    assert replay_keep(p, [0.9, 0.1, 0.2, 0.8], 2, rng) == (1.0, 4 * 2 + (10 - 2) + (40 - 2))
    assert replay_keep(p, [0.1, 0.9, 0.8, 0.0], 2, rng) == (0.0, 8 + 18 + 28)
    # every path kept = the unpruned vote; the 2-2 tie goes to the answer reaching 2 votes first ("3")
    assert replay_keep(p, [0.0] * 4, 4, rng) == (0.0, 100.0)
    acc, tokens = replay_keep(p, None, 1, rng, draws=400)  # random single path: right half the time
    assert 0.4 < acc < 0.6


def test_online_replay_stops_low_confidence_paths_and_drops_their_votes():
    confs = [[5.0] * 8, [4.0] * 8, [5.0] * 4 + [1.0] * 4, [1.0] * 8, [6.0] * 8]
    p = _paths(["7", "3", "3", "3", "7"], [8] * 5, confs)
    assert replay_keep(p, [0.0] * 5, 5, random.Random(0))[0] == 0.0  # all vote: "3" wins 3 to 2
    # warmup = paths 0, 1 (lowest group, window 2: 5 and 4); percentile 0 -> bar 4.0. Path 2 stops once its
    # last 2 tokens average below 4 (t=5), path 3 at its first full window (t=2); voters 0, 1, 4: "7" 2 to 1
    acc, tokens = replay_online(p, warmup=2, percentile=0.0, window=2, top_k=20)
    assert (acc, tokens) == (1.0, 8 + 8 + 5 + 2 + 8)
    # percentile 100 -> bar 5: warmup path 1 (lowest 4) runs to the end but does not vote
    acc, tokens = replay_online(p, warmup=2, percentile=100.0, window=2, top_k=20)
    assert (acc, tokens) == (1.0, 8 + 8 + 5 + 2 + 8)
    p.records[4].cont_answers = ["3"]  # now 0 ("7") and 4 ("3") tie; the first to reach the top total wins
    assert replay_online(p, warmup=2, percentile=100.0, window=2, top_k=20)[0] == 1.0
    assert replay_online(p, warmup=2, percentile=0.0, window=2, top_k=20)[0] == 0.0  # 1 and 4 outvote 0


def test_signals_cli_rows_json_and_png(testbed_labels, tmp_path):
    from click.testing import CliRunner

    from sglang_stop.cli import cli

    png = tmp_path / "sig.png"
    r = CliRunner().invoke(cli, ["bench", "signals", "--labels", str(testbed_labels), "--keep", "1,3",
                                 "--online", '{"percentile": 50, "window": 4}', "--png", str(png), "--out", str(tmp_path / "s.json"), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert json.loads((tmp_path / "s.json").read_text()) == res
    names = [row["name"] for row in res["rows"]]
    assert names[:2] == ["stop", "verifier"] and {"logprob-min", "confidence-bottom10", "diversity", "random",
                                                  "check_steps oracle"} <= set(names)
    assert {row["type"] for row in res["rows"]} == {"I", "II", "III", "IV", "-"}
    for row in res["rows"]:
        assert set(row["keep"]) == {"1", "3"}
        assert row["keep"]["1"]["tokens"] < row["keep"]["3"]["tokens"] < res["all_vote"]["tokens"]
    assert res["online"][0]["result"]["tokens"] <= res["all_vote"]["tokens"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = CliRunner().invoke(cli, ["bench", "signals", "--labels", str(testbed_labels), "--keep", "0"])
    assert r.exit_code != 0 and "--keep" in str(r.exception)  # cli_errors prints it as one line


def test_whole_paths_recut_at_a_later_prune_point(tmp_path):
    """`bench signals --prefix-len`: the same sampled paths, pruned later; paths ended by then are dropped."""
    from click.testing import CliRunner

    from sglang_stop.cli import cli
    from sglang_stop.errors import UserError
    from sglang_stop.testbed.tokenizer import build_tokenizer
    from sglang_stop.training.labels import recut

    out = tmp_path / "paths.jsonl"
    r = CliRunner().invoke(cli, ["label", "--split", "eval", "--problems", "6", "-P", "4", "-K", "1",
                                 "--prefix-len", "6", "--max-new-tokens", "40", "--out", str(out)])
    assert r.exit_code == 0, r.output
    recs = load_labels(out)
    tok = build_tokenizer()
    cut = recut(recs, 14, tok.decode)
    whole = {(r.problem_id, r.prefix_idx): r.token_ids[r.prompt_len:] + r.cont_token_ids[0] for r in recs}
    assert 0 < len(cut) <= len(recs)
    assert len(cut) == sum(len(g) > 14 for g in whole.values())  # ended by 14 tokens: dropped
    for c in cut:
        g = whole[(c.problem_id, c.prefix_idx)]
        assert c.prefix_len == 14 and c.token_ids[c.prompt_len:] == g[:14] and c.cont_token_ids == [g[14:]]
        assert c.prefix_text == tok.decode(g[:14]) and c.cont_lengths == [len(g)]
        assert c.s_mc == next(r.s_mc for r in recs if (r.problem_id, r.prefix_idx) == (c.problem_id, c.prefix_idx))
    with pytest.raises(UserError, match="--prefix-len 4: below"):
        recut(recs, 4, tok.decode)
    with pytest.raises(UserError, match="not a whole path"):
        recut([recs[0].model_copy(update={"K": 2})], 14, tok.decode)
    r = CliRunner().invoke(cli, ["bench", "signals", "--labels", str(out), "--keep", "1", "--prefix-len", "14",
                                 "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["prefix_len"] == 14 and res["records"] == len(cut)
