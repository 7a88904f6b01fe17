"""The committed testbed model, its tokenizer, data splits and the oracle checker."""

from __future__ import annotations

import pytest
import torch

from sglang_stop.testbed import asset_dir
from sglang_stop.testbed.data import (
    answer_of, check_steps, extract_answer, make_problems, sample_questions, solution, split_of, written_solution,
)


def test_problems_are_held_out_and_deterministic():
    ps = make_problems(50, seed=3)
    assert ps == make_problems(50, seed=3) and len({p["id"] for p in ps}) == 50
    assert all(split_of(p["question"]) == "eval" for p in ps)
    assert all(split_of(q) == "label" for q in sample_questions(20, 0, "label"))
    p = ps[0]
    assert p["question"].startswith("Q") and p["question"].endswith("=")
    assert extract_answer(solution(p["question"])) == p["answer"] == answer_of(p["question"])


def test_check_steps():
    assert solution("Q4-8-8=") == "4-8=-4;-4-8=-12;A-12"
    assert check_steps("Q4-8-8=4-8=-4;-4-8=-12;A-12") and check_steps("Q4-8-8=4-8=-4;-4-")
    assert not check_steps("Q4-8-8=4-8=-3;") and not check_steps("Q4-8-8=4-7=-3;")  # arithmetic / copied operand
    assert check_steps("4-8=-4;-4-8=-12;A-12") and not check_steps("4-8=-4;-4-8=-11;")
    assert not check_steps("4-8=-4;5-8=-3;")  # chaining broken


def test_sloppy_writer_chains_carry_their_slips():
    import random

    rng = random.Random(0)
    qs = sample_questions(200, 0, "train")
    assert all(written_solution(q, rng, False, 0.9) == solution(q) for q in qs)  # careful: always right
    sloppy = [(q, written_solution(q, rng, True, 0.35)) for q in qs]
    wrong = [(q, t) for q, t in sloppy if t != solution(q)]
    assert 0.5 < len(wrong) / len(sloppy) < 0.95  # 3-5 steps at 0.35 a step
    for q, t in sloppy:  # a slip is a visible arithmetic error; chaining goes on from the written value
        assert check_steps(t) == check_steps(q + t) == (t == solution(q))
    lucky = sum(extract_answer(t) == answer_of(q) for q, t in wrong)  # slips that cancel out
    assert lucky / len(wrong) < 0.1


def test_abstaining_writer_gives_no_answer_only_after_a_slip():
    import random

    qs = sample_questions(200, 1, "train")
    rng = random.Random(1)
    chains = [(q, written_solution(q, rng, True, 0.35, abstain_rate=1.0)) for q in qs]
    bare = [(q, t) for q, t in chains if t.endswith("A")]
    assert 0.5 < len(bare) / len(chains) < 0.95
    assert all(extract_answer(t) is None and not check_steps(q + t[:-1]) for q, t in bare)
    assert all(check_steps(q + t) for q, t in chains if not t.endswith("A"))  # every slipped chain abstained
    # with abstain_rate 0 the stream (and every chain) is the sloppy writer's as before
    r1, r2 = random.Random(3), random.Random(3)
    assert [written_solution(q, r1, True, 0.35) for q in qs] == [written_solution(q, r2, True, 0.35, 0.0) for q in qs]


def test_default_batches_are_the_session1_recipe():
    """No sloppy writers = correct chains drawn from the same random stream as the session-1 model's."""
    import random

    from sglang_stop.testbed.data import random_question
    from sglang_stop.testbed.tokenizer import build_tokenizer
    from sglang_stop.testbed.train import make_batch

    tok = build_tokenizer()
    ids, _, _ = make_batch(random.Random(7), tok, 6)
    rng, want = random.Random(7), []
    while len(want) < 6:
        q = random_question(rng)
        if split_of(q) == "train":
            want.append(q + solution(q))
    got = [tok.decode(row, skip_special_tokens=True) for row in ids.tolist()]
    assert got == want


def test_committed_model_loads_and_solves_some():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(asset_dir())
    model = AutoModelForCausalLM.from_pretrained(asset_dir()).eval()
    q = "Q4-8-8="
    ids = tok(q)["input_ids"]
    assert ids[0] == tok.bos_token_id and tok.decode(ids, skip_special_tokens=True) == q
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=40)
    text = tok.decode(out[0, len(ids):], skip_special_tokens=True)
    assert text.startswith("4-8=") and "A" in text


def test_grown_model_computes_what_the_old_one_did_until_trained():
    """grow_layers appends layers that are no-ops at first (zero output projections), KV cache included."""
    import torch
    from transformers import LlamaForCausalLM

    from sglang_stop.testbed.train import grow_layers

    old = LlamaForCausalLM.from_pretrained(asset_dir()).eval()
    depth = old.config.num_hidden_layers + 2
    new = grow_layers(LlamaForCausalLM.from_pretrained(asset_dir()), depth).eval()
    assert len(new.model.layers) == new.config.num_hidden_layers == depth
    ids = torch.tensor([[1, 18, 8, 15, 12, 16]])
    with torch.no_grad():
        a, b = old(input_ids=ids), new(input_ids=ids, use_cache=True)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-6, rtol=0)
    assert len(b.past_key_values.layers) == depth
    # the new layers learn: their zeroed output projections get a gradient
    new(input_ids=ids, labels=ids).loss.backward()
    assert new.model.layers[-1].self_attn.o_proj.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="--grow-to 2"):
        grow_layers(new, 2)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--grow-to", "8"], "--grow-to needs --init"),
        (["--init", str(asset_dir()), "--grow-to", "2"], "--grow-to 2 is below the model's"),
    ],
)
def test_grow_to_errors_are_one_line(args, fragment, tmp_path):
    from click.testing import CliRunner

    from sglang_stop.testbed.train import main

    r = CliRunner().invoke(main, ["--out", str(tmp_path / "m"), *args])
    assert r.exit_code == 2 and fragment in r.output and "Traceback" not in r.output
    assert not (tmp_path / "m").exists()
