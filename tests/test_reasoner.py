"""The reasoner's task (written solutions, disjoint pools) and its LoRA trainer (resume = uninterrupted)."""

from __future__ import annotations

import re

import pytest
import torch

from sglang_stop.errors import UserError
from sglang_stop.tasks import load_task
from sglang_stop.tasks.reasoner import FAMILIES, ReasonerTask, examples, solution, written_slip


def test_solutions_reach_the_datasets_answer_and_every_line_is_true():
    task = ReasonerTask()
    pairs = examples("eval", 150)
    assert len(pairs) == 150  # every problem of every family gets written steps
    assert {p.metadata["source_dataset"] for p, _ in pairs} == {f.split(":")[0] for f in FAMILIES}
    for p, sol in pairs:
        *steps, last = sol.splitlines()
        assert last == f"The answer is {p.answer}"
        for line in steps:  # "a op b = c", optionally "N animal: a * b = c legs"
            lhs, rhs = line.split(":")[-1].removesuffix(" legs").split(" = ")
            assert eval(lhs) == int(rhs), line  # noqa: S307 - digits and + - * only
        assert task.check(p, sol) == (p.answer, True)  # the runtime's own extraction and scoring agree


def test_pools_are_disjoint_and_families_do_not_share_numbers():
    task = load_task("reasoner")
    assert task.default_model() == "smollm2-reasoner" and task.splits == ("train", "label", "eval")
    train = {p.question for p in task.split_problems("train", 3000)}
    label = {p.question for p in task.split_problems("label", 600)}
    held = task.problems(200)
    assert [p.id for p in held] == [p.id for p in task.split_problems("eval", 200)]
    assert not train & {p.question for p in held} and not label & {p.question for p in held}
    chain = [p.metadata["expression"] for p in held if p.metadata["source_dataset"] == "chain_sum"]
    arith = [p.metadata["expression"] for p in held if p.metadata["source_dataset"] == "basic_arithmetic"]
    assert sum(a == b for a, b in zip(chain, arith)) == 0
    with pytest.raises(UserError, match="splits are train, label, eval"):
        task.split_problems("test", 3)


def test_written_slips_are_read_from_finished_lines_only():
    for p, sol in examples("eval", 60):  # a right solution never shows a slip, however it is cut
        for cut in range(len(sol) + 1):
            assert not written_slip(p.id, sol[:cut]), (p.id, sol[:cut])
    chain, arith, legs = "chain_sum[x]/1/0", "basic_arithmetic[x]/1/0", "leg_counting[x]/1/0"
    assert written_slip(chain, "78 - 25 = 63\n63 + 8")  # wrong arithmetic
    assert not written_slip(chain, "78 - 25 = 6")  # unfinished line: not judged yet
    assert written_slip(chain, "-6 - 9 = -15\n-21 + 4 = -17\n")  # a chain line must continue the last
    assert not written_slip(arith, "3 + 4 = 7\n5 - 2 = 3\n7 * 3 = 21\n")  # evaluation order: no chaining
    assert written_slip(legs, "2 spider: 2 * 8 = 14 legs\n")
    assert not written_slip(legs, "2 spider: 2 * 8 = 16 legs\n1 ant: 1 * 6 = 6 legs\n16 + 6 = 22\n")


def test_a_problem_without_steps_is_refused():
    p = ReasonerTask().problems(1)[0].model_copy(update={"answer": "12345"})
    with pytest.raises(ValueError, match="the dataset says 12345"):
        solution(p)


def _testbed_rows(n: int = 24):
    from sglang_stop.testbed import asset_dir
    from sglang_stop.models import load_model

    model, tok = load_model(str(asset_dir()), device="cpu", dtype="float32")
    rows = []
    for i in range(n):
        prompt = tok(f"Q{i % 9 + 1}+{i % 7 + 1}=", add_special_tokens=False)["input_ids"]
        ans = tok(f"{i % 9 + 1}+{i % 7 + 1}={i % 9 + i % 7 + 2};A{i % 9 + i % 7 + 2}", add_special_tokens=False)["input_ids"]
        rows.append((prompt + ans + [tok.eos_token_id], len(prompt)))
    return model, tok, rows


def test_answer_only_loss_matches_transformers_loss():
    from peft import LoraConfig, get_peft_model

    from sglang_stop.training.reasoner import _batch, _loss

    model, tok, rows = _testbed_rows(6)
    pm = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    batch = _batch(rows, tok.pad_token_id or 0)
    assert (batch["labels"][0, : rows[0][1]] == -100).all() and (batch["labels"][0, rows[0][1]] != -100)
    with torch.no_grad():
        assert abs(float(_loss(pm, batch)) - float(pm(**batch).loss)) < 1e-5


def test_train_resumes_where_it_stopped(tmp_path):
    """Two steps, a new process-like restart, one more step == three steps at once (same losses, weights)."""
    import json

    from sglang_stop.training.reasoner import ReasonerRecipe, train_reasoner

    recipe = ReasonerRecipe(steps=3, batch_size=4, lora_r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                            warmup_steps=1)
    model, tok, rows = _testbed_rows()
    train_reasoner(model, rows, recipe, tmp_path / "w1", tmp_path / "a1", pad_id=0, save_every=1, progress=False)
    once = [json.loads(x)["loss"] for x in (tmp_path / "w1" / "log.jsonl").read_text().splitlines()]

    model, _, _ = _testbed_rows()
    two = recipe.model_copy(update={"steps": 2})
    with pytest.raises(UserError, match="another recipe"):  # a state of another recipe is never continued
        train_reasoner(model, rows, two, tmp_path / "w1", tmp_path / "x", pad_id=0, progress=False)
    model, _, _ = _testbed_rows()
    w2 = tmp_path / "w2"
    train_reasoner(model, rows, recipe.model_copy(update={"steps": 2}), w2, tmp_path / "a2", pad_id=0,
                   save_every=1, progress=False)
    state = torch.load(w2 / "state.pt", weights_only=False)
    state["recipe"] = recipe.model_dump()  # as if the 3-step run had been killed after step 2
    torch.save(state, w2 / "state.pt")
    model, _, _ = _testbed_rows()
    train_reasoner(model, rows, recipe, w2, tmp_path / "a2", pad_id=0, save_every=1, progress=False)
    resumed = [json.loads(x)["loss"] for x in (w2 / "log.jsonl").read_text().splitlines()]
    assert resumed == pytest.approx(once, abs=1e-5)
    assert json.loads((tmp_path / "a2" / "recipe.json").read_text())["steps"] == 3
    from safetensors.torch import load_file

    a1, a2 = load_file(tmp_path / "a1" / "adapter_model.safetensors"), load_file(tmp_path / "a2" / "adapter_model.safetensors")
    assert a1.keys() == a2.keys() and all(t.dtype == torch.bfloat16 for t in a1.values())
    assert all(torch.allclose(a1[k].float(), a2[k].float(), atol=1e-2) for k in a1)
    assert not re.search(r"\.tmp|\.state\.", " ".join(p.name for p in tmp_path.rglob("*")))
