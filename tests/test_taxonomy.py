"""The paper's taxonomy in the registry: Type I diversity (SlimSC-style), Type III measures exactly as
DeepConf's code defines them, and STOP checkpoints in the layout the authors' harness reads."""

from __future__ import annotations

import json
import random
import shutil

import pytest
import torch

from sglang_stop.errors import UserError
from sglang_stop.policy import bottom_window_mean, lowest_window_mean, window_means
from sglang_stop.scorers import Branch, ScoreContext, available_scorers, make_scorer
from sglang_stop.scorers.diversity import jaccard, ngrams

CTX = ScoreContext(backend=None, rng=random.Random(0))


def text_branch(i: int, text: str) -> Branch:
    words = text.split()
    return Branch(i, [1], list(range(len(words))), text, [0.0] * len(words), [[0.0]] * len(words), [0.0] * len(words))


# --- Type I: diversity ---------------------------------------------------------------------------


def test_diversity_is_registered_and_validates_options():
    assert "diversity" in available_scorers()
    with pytest.raises(UserError, match="n"):
        make_scorer("diversity", {"n": 0})
    with pytest.raises(UserError, match="similarity"):
        make_scorer("diversity", {"similarity": "min"})


def test_jaccard_over_word_ngrams():
    a, b = ngrams("a b c d".split(), 2), ngrams("a b c e".split(), 2)
    assert jaccard(a, b) == pytest.approx(2 / 4)  # {ab, bc} shared of {ab, bc, cd, ce}
    assert jaccard(a, a) == 1.0 and jaccard(frozenset(), frozenset()) == 1.0
    assert ngrams(["x"], 3) == frozenset([("x",)])  # shorter than n: one gram


def test_diversity_keeps_one_of_a_duplicate_and_the_odd_one_out():
    paths = [text_branch(0, "3 + 4 = 7 so"), text_branch(1, "3 + 4 = 7 so"), text_branch(2, "4 + 3 is 8 then"),
             text_branch(3, "3 + 4 = 7 hence")]
    scores = make_scorer("diversity").score(paths, CTX)
    ranked = sorted(range(4), key=lambda i: -scores[i])
    assert set(ranked[:2]) == {0, 2}  # the odd one out, and the lower-index copy of the duplicate
    one_pass = make_scorer("diversity", {"greedy": False}).score(paths, CTX)
    assert one_pass[0] == one_pass[1] == min(one_pass)  # one pass: both copies score lowest
    assert max(one_pass) == one_pass[2]


def test_diversity_mean_vs_max_and_token_units():
    # 0 and 1 share a lot; 2 shares a little with each: it is the most diverse either way
    paths = [text_branch(0, "a b c d"), text_branch(1, "a b c x"), text_branch(2, "a b y z")]
    mx = make_scorer("diversity", {"similarity": "max", "greedy": False}).score(paths, CTX)
    mean = make_scorer("diversity", {"similarity": "mean", "greedy": False}).score(paths, CTX)
    assert mx[2] > mx[0] and mean[2] > mean[0]
    assert mean[0] == pytest.approx(1 - (2 / 4 + 1 / 5) / 2)
    tok = [Branch(i, [1], ids, "", [], [], []) for i, ids in enumerate([[5, 6, 7], [5, 6, 7], [9, 9, 9]])]
    # greedy: the duplicate's higher-index copy goes first, then of the two left (no overlap) index 2
    assert make_scorer("diversity", {"unit": "token", "n": 1}).score(tok, CTX) == [2.0, 0.0, 1.0]


# --- Type III: DeepConf's measures ---------------------------------------------------------------


def deepconf_bottom(confs: list[float], window: int, bottom: float = 0.1) -> float:
    """analysis_offline.py calculate_bottom_window_confidence, restated (numpy-free) for the test."""
    if len(confs) < window:
        return sum(confs) / len(confs)
    means = [sum(confs[i : i + window]) / window for i in range(len(confs) - window + 1)]
    n = max(1, int(len(means) * bottom))
    return sorted(means)[0] if n == 1 else sum(sorted(means)[:n]) / n


def test_group_confidences_match_deepconf():
    rng = random.Random(3)
    confs = [rng.uniform(0, 5) for _ in range(57)]
    assert window_means(confs, 8) == pytest.approx([sum(confs[i : i + 8]) / 8 for i in range(50)])
    assert window_means(confs[:5], 8) == pytest.approx([sum(confs[:5]) / 5])  # shorter than the window
    assert lowest_window_mean(confs, 8) == pytest.approx(min(window_means(confs, 8)))
    for w in (1, 4, 8, 30, 60):
        assert bottom_window_mean(confs, w) == pytest.approx(deepconf_bottom(confs, w)), w


def test_confidence_reductions_lowest_tail_bottom10():
    # token confidence -mean(top-k): top-2 logprobs (-0.1, -0.3) -> 0.2; (-1, -3) -> 2.0
    top = [[-0.1, -0.3, -9.0]] * 20 + [[-1.0, -3.0, -9.0]] * 2 + [[-0.1, -0.3, -9.0]] * 10
    b = Branch(0, [1], list(range(32)), "", [-0.1] * 32, top, [0.1] * 32)
    conf = [0.2] * 20 + [2.0] * 2 + [0.2] * 10

    def score(**opts):
        return make_scorer("confidence", {"top_k": 2, **opts}).score([b], CTX)[0]

    assert score() == pytest.approx(sum(conf) / 32)
    assert score(window=4, reduce="lowest") == pytest.approx(0.2)
    assert score(window=4, reduce="tail") == pytest.approx(0.2)
    assert score(window=4, reduce="bottom10") == pytest.approx(deepconf_bottom(conf, 4))
    assert score(window=64, reduce="bottom10") == pytest.approx(sum(conf) / 32)  # one group


# --- STOP checkpoints: the authors' harness layout -----------------------------------------------


def _tiny():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(cfg).eval()


def test_checkpoint_written_where_the_authors_harness_reads_it(tmp_path):
    from sglang_stop.scorers.stop import StopNet, StopNetConfig, load_checkpoint, save_checkpoint
    from sglang_stop.testbed.tokenizer import build_tokenizer

    model = _tiny()
    torch.manual_seed(1)
    net = StopNet(StopNetConfig(num_assess_tokens=2, lora_r=2, lora_alpha=4, lora_dropout=0.0), model).eval()
    with torch.no_grad():
        for b in net.lora_B:
            b.normal_(0, 0.3)
    ckpt = save_checkpoint(tmp_path / "c", net, model)
    # src/inference.py of bijiaxihh/STOP: LORA_PATH = ROOT/adapter/classifier, special_token_id >= 0
    for f in ("adapter/classifier/adapter_config.json", "adapter/classifier/adapter_model.safetensors"):
        assert (ckpt / f).is_file(), f
    meta = json.loads((ckpt / "assess_token_config.json").read_text())
    emb = torch.load(ckpt / "assess_token_embedding.pth", weights_only=True)
    assert meta["special_token_id"] == emb["special_token_id"] == 40  # no tokenizer: the base's vocab size
    with_tok = save_checkpoint(tmp_path / "t", net, model, tokenizer=build_tokenizer())
    tok_id = json.loads((with_tok / "assess_token_config.json").read_text())["special_token_id"]
    assert tok_id >= 0 and tok_id == build_tokenizer().vocab_size  # [STOP] appended to the tokenizer
    ids = [[3, 4, 5, 6]]
    want = net.logits_from_ids(model, ids)
    assert torch.allclose(load_checkpoint(ckpt, model).logits_from_ids(model, ids), want, atol=1e-6)
    # the layout written before (adapter/ directly) still loads, to the same scores
    old = tmp_path / "old"
    shutil.copytree(ckpt, old)
    for f in (old / "adapter" / "classifier").iterdir():
        f.rename(old / "adapter" / f.name)
    (old / "adapter" / "classifier").rmdir()
    assert torch.allclose(load_checkpoint(old, model).logits_from_ids(model, ids), want, atol=1e-6)


# --- Type II: the verifier re-encodes the text with its own model copy ---------------------------


def _text_records() -> list:
    """48 testbed-token records, good iff the prefix ends in "7": learnable from the text alone."""
    from sglang_stop.testbed.tokenizer import build_tokenizer
    from sglang_stop.training.labels import LabelRecord

    tok = build_tokenizer()
    rng = random.Random(0)
    recs = []
    for i in range(48):  # good iff the prefix ends in "7": learnable from the text alone
        end = "7" if i % 2 else "3"
        text = "Q" + "".join(rng.choice("12345689+-") for _ in range(rng.randint(3, 9))) + "=" + end
        ids = tok(text)["input_ids"]
        recs.append(LabelRecord(problem_id=f"p{i // 4}", question=text, answer="", prefix_idx=i % 4, token_ids=ids,
                                prompt_len=2, prefix_len=len(ids) - 2, prefix_text=text, s_mc=float(i % 2), K=1,
                                cont_lengths=[len(ids)], cont_answers=[None], seed=0))
    return recs


def test_verifier_trains_saves_and_scores_padding_invariant(tmp_path):
    from sglang_stop.scorers.verifier import VERIFIER_FILE, load_verifier, verifier_logits
    from sglang_stop.training.verifier import train_verifier

    recs = _text_records()
    ckpt = tmp_path / "v"
    best = train_verifier(recs, "testbed", ckpt, epochs=6, lr=3e-3, lora_r=2, batch_size=8, val_fraction=0.3,
                          log=lambda _m: None)
    assert (ckpt / VERIFIER_FILE).is_file() and (ckpt / "adapter/classifier/adapter_model.safetensors").is_file()
    assert best["val_loss"] < 0.6  # below log 2: it learned something from the text
    scorer = make_scorer("verifier", {"checkpoint": str(ckpt)})
    branches = [Branch(j, r.token_ids[:2], r.token_ids[2:], "", [], [], []) for j, r in enumerate(recs[:6])]
    scores = scorer.score(branches, CTX)
    assert all(0.0 <= s <= 1.0 for s in scores)
    net, model = load_verifier(ckpt)
    with torch.no_grad():  # batched (left-padded) == alone
        alone = [torch.softmax(verifier_logits(net, model, [b.token_ids]), -1)[0, 1].item() for b in branches]
    assert scores == pytest.approx(alone, abs=1e-5)
    good = [s for s, r in zip(scores, recs) if r.s_mc == 1.0]
    bad = [s for s, r in zip(scores, recs) if r.s_mc == 0.0]
    assert min(good) > max(bad)
    with pytest.raises(UserError, match="checkpoint"):
        make_scorer("verifier")
    # the cost bench: both sides run on the same sequences; the verifier re-encodes all of them
    from sglang_stop.bench.scoring import run_verifier_cost, verifier_cost_text
    from sglang_stop.testbed import stop_asset_dir

    stop_model = load_verifier(ckpt)[1]  # a base model instance the STOP checkpoint was trained for
    cost = run_verifier_cost(stop_model, "testbed", str(stop_asset_dir()), str(ckpt), tokens=24, batch=4, repeats=1)
    assert cost.stop_s > 0 and cost.verifier_s > 0 and cost.ratio == pytest.approx(cost.verifier_s / cost.stop_s)
    assert "ratio" in verifier_cost_text(cost)


def test_verifier_training_resumes_after_the_last_finished_epoch(tmp_path):
    from safetensors.torch import load_file

    from sglang_stop.training.verifier import train_verifier

    recs = _text_records()
    kw = dict(epochs=3, lr=3e-3, lora_r=2, batch_size=8, val_fraction=0.3)
    whole = train_verifier(recs, "testbed", tmp_path / "a", log=lambda _m: None, **kw)

    def crash_in_epoch_3(line: str) -> None:
        if line.startswith("epoch 3"):
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train_verifier(recs, "testbed", tmp_path / "b", log=crash_in_epoch_3, **kw)
    lines: list[str] = []
    resumed = train_verifier(recs, "testbed", tmp_path / "b", log=lines.append, **kw)
    assert lines[0].startswith("resumed after epoch 2") and len(lines) == 2 and lines[1].startswith("epoch 3")
    assert resumed["epoch"] == whole["epoch"] and resumed["val_loss"] == pytest.approx(whole["val_loss"], abs=1e-6)
    a, b = (load_file(tmp_path / d / "adapter/classifier/adapter_model.safetensors") for d in "ab")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    with pytest.raises(UserError, match="--out: .*b.work.*other settings"):
        train_verifier(recs, "testbed", tmp_path / "b", log=lambda _m: None, **{**kw, "lr": 1e-3})


def test_verifier_base_is_a_dir_a_model_name_or_testbed(tmp_path):
    from sglang_stop.scorers.verifier import check_base

    for ok in ("testbed", "smollm2-reasoner", str(tmp_path)):
        check_base(ok)
    with pytest.raises(UserError, match="--base: .*nope"):
        check_base(str(tmp_path / "nope"))
