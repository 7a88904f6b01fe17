from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sglang_stop.errors import UserError
from sglang_stop.tasks import (
    MixTask,
    Problem,
    ReasoningGymTask,
    answers_match,
    extract_answer,
    load_task,
    normalize_answer,
)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("4 - 1 = 3\nThe answer is 3.", "3"),
        ("The answer is 5. Wait, 2+4=6. The answer is 6", "6"),  # last occurrence wins
        ("so 3+4=7. The answer is **7**.", "7"),
        ("The answer is: -12", "-12"),
        ("The answer is 1,234 apples.", "1234"),
        ("The answer is +03.0.", "3"),
        ("The answer is 5, which is odd.", "5"),
        ("The answer is $\\frac{1}{2}$.", "\\frac{1}{2}"),
        ("The answer is indeed 7, as shown", "7"),  # prose after the marker: its first number
        ("The answer is N because it is", None),  # template copied, no number: nothing to vote
        ("The answer is yes.", "yes"),
        ("thus \\boxed{\\frac{3}{4}} done", "\\frac{3}{4}"),
        ("The answer is 4. Finally \\boxed{5}", "5"),  # boxed comes later
        ("Answer: 42", "42"),
        ("We get 12 and then 15", None),  # no stated answer: abstain (no last-number fallback)
        ("no digits here", None),
        ("The answer is", None),
    ],
)
def test_extract_answer(text: str, want: str | None) -> None:
    assert extract_answer(text) == want


def test_extract_last_number_fallback() -> None:
    assert extract_answer("We get 12 and then 1,500.", last_number_fallback=True) == "1500"
    assert load_task("mmath:math500").extract_answer("so 3 then 4") == "4"  # mmath's own rule
    assert load_task("default").extract_answer("so 3 then 4") is None


def test_normalize_and_match() -> None:
    assert normalize_answer(" 1,000. ") == "1000"
    assert normalize_answer("1,2") == "1,2"  # not a thousands separator: left alone
    assert answers_match("0.5", "\\frac{1}{2}")
    assert answers_match("\\dfrac{1}{2}", "1/2")
    assert answers_match("1,000", "1000.0")
    assert answers_match("90^\\circ", "90")
    assert not answers_match("5", "6")
    assert not answers_match(None, "6")


@pytest.mark.parametrize(
    "spec",
    ["chain_sum:min_terms=2,max_terms=3,min_digits=1,max_digits=2", "basic_arithmetic:min_terms=2,max_terms=2"],
)
def test_rg_scoring_agrees_with_extraction(spec: str) -> None:
    task = load_task(spec)
    probs = task.problems(20, seed=3)
    assert len(probs) == 20 and len({p.id for p in probs}) == 20
    for p in probs:
        right = f"Let me compute step by step.\nThe answer is {p.answer}."
        wrong = f"The answer is {int(p.answer) + 1}."
        assert task.check(p, right) == (normalize_answer(p.answer), True)
        assert task.check(p, wrong)[1] is False
        assert task.is_correct(p, None) is False
    # reasoning-gym's own score_answer, not ours: chain_sum tolerates '+01,000'-style answers
    p = load_task("chain_sum").problems(1, 0)[0]
    assert load_task("chain_sum").is_correct(p, "+" + p.answer) == (not p.answer.startswith("-"))


def test_rg_problems_are_seeded_and_roundtrip() -> None:
    task = load_task("gsm_symbolic")
    a, b, c = task.problems(3, 1), task.problems(3, 1), task.problems(3, 2)
    assert [p.question for p in a] == [p.question for p in b] != [p.question for p in c]
    p = Problem.model_validate_json(a[0].model_dump_json())  # survives a JSONL record
    assert task.is_correct(p, p.answer) and not task.is_correct(p, "-1")


def test_rg_kwargs_parsing() -> None:
    t = load_task("basic_arithmetic:min_terms=2,max_terms=2,operators=+|*,allow_negation=false")
    assert isinstance(t, ReasoningGymTask)
    assert t.kwargs == {"min_terms": 2, "max_terms": 2, "operators": ["+", "*"], "allow_negation": False}
    assert all(" - " not in p.question and "/" not in p.question for p in t.problems(20, 0))


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("no_such_task", r"unknown task 'no_such_task' \(known: default, .*chain_sum"),
        ("chain_sum:bogus=1", r"task 'chain_sum:bogus=1': unknown option 'bogus' for reasoning-gym chain_sum \(options: min_terms,"),
        ("chain_sum:min_terms=5,max_terms=2",
         "reasoning-gym rejected options min_terms=5, max_terms=2: max_terms must be >= min_terms"),
        ("chain_sum:min_terms=0,max_terms=3", "reasoning-gym rejected option min_terms=0: min_terms must be positive"),
        ("chain_sum:min_terms=abc", "option min_terms=abc rejected: reasoning-gym's chain_sum expects an integer"),
        ("chain_sum:min_terms=2.5", "option min_terms=2.5 rejected: .* expects an integer"),
        ("chain_sum:min_terms=true", "option min_terms=true rejected: .* expects an integer"),
        ("chain_sum:allow_negation=1", "option allow_negation=1 rejected: .* expects true or false"),
        ("chain_sum:min_terms=1|2", "min_terms=1|2 rejected: .* takes one value"),
        ("basic_arithmetic:format_style=fancy", r"format_style=fancy rejected: .* expects one of simple\|natural"),
        ("chain_sum:size=3", "option 'size' is set by the runner"),
        ("chain_sum:seed=3", "option 'seed' is set by the runner"),
        ("chain_sum:min_terms=2,min_terms=3", "option 'min_terms' given twice"),
        ("mix:chain_sum:min_terms=x,basic_arithmetic", "task 'chain_sum:min_terms=x': option min_terms=x rejected"),
        ("chain_sum:min_terms", "expected key=value"),
        ("mmath:aime1999", r"unknown task 'mmath:aime1999' \(known subsets"),
        ("missing.jsonl", "missing.jsonl: task file not found"),
        ("mix:default", "do not nest"),
    ],
)
def test_bad_specs(spec: str, match: str) -> None:
    with pytest.raises(UserError, match=match):
        load_task(spec)


def test_mix_interleaves_and_dispatches() -> None:
    t = load_task("mix:chain_sum:min_terms=2,max_terms=2,basic_arithmetic")
    assert isinstance(t, MixTask) and len(t.components) == 2
    assert t.components[0].kwargs == {"min_terms": 2, "max_terms": 2}
    probs = t.problems(5, 0)
    assert [p.source.split(":")[0] for p in probs] == ["chain_sum", "basic_arithmetic"] * 2 + ["chain_sum"]
    for p in probs:
        assert t.is_correct(p, normalize_answer(p.answer))
    alien = probs[0].model_copy(update={"source": "gsm_symbolic"})
    with pytest.raises(UserError, match="not part of"):
        t.is_correct(alien, "1")


def test_default_task() -> None:
    t = load_task("default")
    assert t.spec == "default" and t.chat_template
    assert "The answer is N" in t.default_prompt and "step by step" in t.default_prompt
    probs = t.problems(40, 0)
    assert len(probs) == 40
    for p in probs:  # 2 terms, 1 digit, no division
        assert "/" not in p.question
        assert abs(int(p.answer)) <= 81
    assert t.format_prompt("Q?").startswith("Q?\n\n")
    assert t.format_prompt("Q?", prompt="x {question} \\boxed{{}}") == "x Q? \\boxed{}"  # doubled = literal
    assert t.format_prompt("{x}", prompt="a {question} b") == "a {x} b"  # the question itself is not a template


@pytest.mark.parametrize(
    ("prompt", "fragment"),
    [
        ("{question} {bogus}", "unknown placeholder '{bogus}'"),
        ("{question} \\boxed{}", "unknown placeholder '{}'"),
        ("{question!r}", "unknown placeholder '{question!r}'"),
        ("{question} }", "Single '}'"),
        ("no placeholder", "must contain '{question}'"),
    ],
)
def test_bad_prompt_templates(prompt: str, fragment: str) -> None:
    with pytest.raises(UserError) as e:
        load_task("default").format_prompt("Q?", prompt=prompt)
    assert str(e.value).startswith("prompt: ") and fragment in str(e.value)


def test_rg_options_typed_by_the_dataset_config() -> None:
    t = load_task("chain_sum:allow_negation=true,min_terms=2,max_terms=2")
    assert t.kwargs == {"allow_negation": True, "min_terms": 2, "max_terms": 2}
    assert t.spec == "chain_sum:allow_negation=True,min_terms=2,max_terms=2"  # as problem ids always hashed it
    one = load_task("basic_arithmetic:operators=+,min_terms=2,max_terms=2")  # one operator: still a list
    assert one.kwargs["operators"] == ["+"]
    assert all("+" in p.question and "*" not in p.question for p in one.problems(5, 0))


def test_default_problem_ids_unchanged() -> None:
    """The committed calibration set was recorded on `default`: its problem ids must still come out."""
    import gzip

    calib = Path(__file__).resolve().parents[1] / "advisor" / "data" / "smollm2-calib.jsonl.gz"
    with gzip.open(calib, "rt") as f:
        recorded = [json.loads(next(f))["problem_id"] for _ in range(4)]
    assert [p.id for p in load_task("default").problems(4, 0)] == recorded


def test_mix_of_jsonl_files(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / f"{name}.jsonl").write_text(json.dumps({"question": f"{name}?", "answer": "1"}) + "\n")
    t = load_task(f"mix:{tmp_path / 'a.jsonl'},{tmp_path / 'b.jsonl'}")
    assert isinstance(t, MixTask) and [p.question for p in t.problems(2)] == ["a?", "b?"]


def test_jsonl_task(tmp_path: Path) -> None:
    f = tmp_path / "probs.jsonl"
    rows = [{"question": "1+1?", "answer": 2}, {"question": "half?", "answer": "\\frac{1}{2}", "id": "h", "lvl": 3}]
    f.write_text("\n".join(json.dumps(r) for r in rows))  # no trailing newline: last line still read
    t = load_task(str(f))
    probs = t.problems(10, seed=99)
    assert [p.id for p in probs] == ["probs/0", "h"] and probs[1].metadata == {"lvl": 3}
    assert t.is_correct(probs[0], t.extract_answer("so the answer is 2.0"))
    assert t.is_correct(probs[1], extract_answer("The answer is 0.5"))
    assert not t.is_correct(probs[1], "0.25")
    assert len(t.problems(1)) == 1


@pytest.mark.parametrize(
    ("lines", "match"),
    [
        (['{"question": "a", "answer": "1"}', "{not json"], r"bad\.jsonl:2: invalid JSON"),
        (['{"question": "a", "answer": "1"}', "", '{"answer": "1"}'], r"bad\.jsonl:3: question"),
        (['{"question": "a", "answer": null}'], r"bad\.jsonl:1: answer"),
        (['{"question": "a", "answer": 1, "id": 1}', '{"question": "b", "answer": 2, "id": "1"}'], "duplicate id '1'"),
        ([""], "no problems"),
    ],
)
def test_jsonl_errors_name_file_line(tmp_path: Path, lines: list[str], match: str) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=match):
        load_task(str(f))


def test_mmath() -> None:
    t = load_task("mmath:aime2024")
    probs = t.problems(100)
    assert len(probs) == 30 and probs[0].answer == "204"
    assert "\\boxed{}" in t.format_prompt("x")
    assert t.is_correct(probs[0], extract_answer("... so \\boxed{204}"))
    assert len(load_task("MMATH:all".lower()).problems(10_000)) == 374


def test_testbed_task() -> None:
    t = load_task("testbed")
    assert t.chat_template is False and t.format_prompt("Q4-8-8=") == "Q4-8-8="
    p = Problem(id="t0", question="Q4-8-8=", answer="-12", source="testbed")
    assert t.check(p, "4-8=-4;-4-8=-12;A-12") == ("-12", True)
    assert t.check(p, "4-8=-4;-4-8=-11;A-11") == ("-11", False)
    assert t.check(p, "4-8=-4;-4-8=") == (None, False)


def test_testbed_answer_format_is_the_data_modules() -> None:
    from sglang_stop.testbed import data

    t = load_task("testbed")
    for p in t.problems(5, 0):
        assert p.question.startswith("Q") and p.question.endswith("=")
        solved = data.solution(p.question)
        assert t.extract_answer(solved) == data.extract_answer(solved) == p.answer
        assert t.is_correct(p, t.extract_answer(f"whatever;A{p.answer}"))


def test_jsonl_and_package_import_leave_reasoning_gym_unimported(tmp_path: Path) -> None:
    """reasoning-gym's import takes seconds: only a spec that may name one of its datasets pays it."""
    f = tmp_path / "p.jsonl"
    f.write_text('{"question": "1+1?", "answer": 2}\n')
    code = (
        "import sys; from sglang_stop.tasks import load_task; "
        f"assert load_task({str(f)!r}).problems(1)[0].answer == '2'; load_task('testbed'); "
        "assert 'reasoning_gym' not in sys.modules, 'reasoning_gym imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_rg_failure_without_options_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import reasoning_gym

    def broken(*a: object, **k: object) -> None:
        raise ValueError("boom\nsecond line")

    monkeypatch.setattr(reasoning_gym, "create_dataset", broken)
    with pytest.raises(UserError, match=r"^task 'chain_sum': reasoning-gym could not build the dataset: boom second line$"):
        load_task("chain_sum")


def test_splits_are_the_tasks_own(tmp_path: Path) -> None:
    from sglang_stop.testbed import asset_dir

    tb = load_task("testbed")
    assert tb.splits == ("label", "eval") and tb.default_model() == str(asset_dir())
    label, held_out = tb.split_problems("label", 50, 0), tb.problems(50, 0)
    assert held_out == tb.split_problems("eval", 50, 0)
    assert not {p.question for p in label} & {p.question for p in held_out}  # STOP is judged on unseen problems
    with pytest.raises(UserError, match="split 'dev': the testbed's splits are label, eval"):
        tb.split_problems("dev", 1)
    (tmp_path / "p.jsonl").write_text('{"question": "Q1+1=", "answer": 2}\n')
    other = load_task(str(tmp_path / "p.jsonl"))
    assert other.splits == () and other.default_model() is None
    with pytest.raises(UserError, match="has no splits"):
        other.split_problems("label", 1)
