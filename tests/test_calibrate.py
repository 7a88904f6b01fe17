"""`calibrate` writes records the advisor loads, and a rerun after a kill adds no duplicate."""

from __future__ import annotations

import json
import re

import pytest

from sglang_stop.advisor.calibration import load_calibration
from sglang_stop.backends.local import LocalBackend
from sglang_stop.calibrate import collect
from sglang_stop.config import RuntimeConfig
from sglang_stop.errors import UserError
from sglang_stop.tasks import JsonlTask


def raw_task(tmp_path, rows: list[tuple[str, str]]) -> JsonlTask:
    """A JSONL task of (question, answer) rows fed to the model as is (no prompt, no chat template)."""
    data = tmp_path / "p.jsonl"
    data.write_text("".join(f'{{"id": "q{i}", "question": "{q}", "answer": "{a}"}}\n' for i, (q, a) in enumerate(rows)))
    task = JsonlTask(str(data))
    task.default_prompt = "{question}"
    task.chat_template = False
    return task


def test_collect_records_every_scorer_and_resumes(tiny_lm, tmp_path):
    task = raw_task(tmp_path, [(f"Q{i}+1=", str(i + 1)) for i in range(3)])
    probs = task.problems(3, 0)
    out = tmp_path / "calib.jsonl"
    be = LocalBackend(*tiny_lm)
    cfg = RuntimeConfig(sampling={"max_new_tokens": 12, "temperature": 1.0})
    try:
        kw = dict(out=out, n_max=4, prefix_lens=[3, 6], scorers={"confidence": {}, "entropy": {}, "random": {}},
                  model_id="tiny", concurrency=2)
        assert collect(be, task, probs[:2], cfg, **kw) == 2
        # simulate a kill mid-append: a torn last line
        with open(out, "ab") as f:
            f.write(b'{"schema_version": 1, "problem_id": "q2", "ta')
        assert collect(be, task, probs, cfg, **kw) == 1
    finally:
        be.shutdown()
    head, *lines = out.read_text().splitlines()
    header = json.loads(head)["header"]
    assert header["kind"] == "calibration" and header["seed"] == cfg.seed
    assert header["settings"]["n_max"] == 4 and header["settings"]["prefix_lens"] == [3, 6]
    assert header["settings"]["scorers"] == {"confidence": {}, "entropy": {}}  # random needs no recording
    assert header["model"]["name"] and len(header["model"]["weights_hash"]) == 16
    assert len(lines) == 3
    ids = [re.search(r'"problem_id":"(q\d)"', line).group(1) for line in lines]
    assert sorted(ids) == ["q0", "q1", "q2"]
    cs = load_calibration([out])
    assert cs.scorers == ["confidence", "entropy"]
    for rec in cs.records:
        assert len(rec.paths) == 4
        for p in rec.paths:
            for L in (3, 6):
                if p.length > L:
                    assert set(p.scores["confidence"]) >= {L}


def test_pruned_run_matches_exact_replay_of_calibration(tiny_lm, tmp_path):
    """A pruned run with the calibration's seed samples the first N recorded paths: the advisor's
    per-problem replay (runtime rules) must give its tokens and voted answer exactly."""
    from sglang_stop.advisor.check import check_exact
    from sglang_stop.runner import run_problems

    task = raw_task(tmp_path, [(f"Q{i}*2=", str(2 * i)) for i in range(4)])
    probs = task.problems(4, 0)
    out = tmp_path / "calib.jsonl"
    base = RuntimeConfig(sampling={"max_new_tokens": 12, "temperature": 1.0}, seed=3)
    be = LocalBackend(*tiny_lm)
    try:
        collect(be, task, probs, base, out=out, n_max=6, prefix_lens=[3, 6], scorers={"confidence": {}},
                model_id="tiny", concurrency=2)
        for stages, agg in (([{"prefix_len": 3, "keep": 2}], "weighted"),
                            ([{"prefix_len": 3, "keep": 3}, {"prefix_len": 6, "keep": 1}], "majority")):
            cfg = RuntimeConfig.model_validate({**base.model_dump(), "n": 5, "stages": stages,
                                                "scorer": {"name": "confidence"}, "aggregation": {"method": agg}})
            results, _ = run_problems(be, task, probs, cfg, concurrency=2)
            rep = check_exact(out, cfg, results)
            assert rep.problems == 4
            assert rep.token_mismatches == 0 and rep.answer_mismatches == 0, rep
            assert rep.replayed_tokens_per_problem == sum(r.tokens for r in results) / 4
            assert rep.replayed_tokens_per_problem < sum(len(p.paths) for p in results) * 12  # it pruned
    finally:
        be.shutdown()


class NoDecode:
    """A backend that fails the test if collect decodes anything (the checks must come first)."""

    def get_model_name(self) -> str:
        return "never-loaded"

    def __getattr__(self, name):
        raise AssertionError(f"collect used the backend ({name}) before refusing its input")


@pytest.mark.parametrize("over, match", [
    ({"n_max": 0}, r"--n-max: must be >= 1"),
    ({"prefix_lens": [3, 12]}, r"--prefix-lens: 12 is not below sampling.max_new_tokens \(12\)"),
    ({"prefix_lens": []}, r"--prefix-lens: need positive"),
    ({"out": "x.jsonl.gz"}, r"plain .jsonl"),
    ({"n_max": 5000}, r"--n-max: Input should be less than or equal to 1024"),
])
def test_collect_refuses_bad_input_before_decoding(tmp_path, over, match):
    task = raw_task(tmp_path, [("Q1+1=", "2")])
    kw = dict(out=tmp_path / "c.jsonl", n_max=4, prefix_lens=[3, 6], scorers={"confidence": {}}, model_id="x")
    kw.update({k: (tmp_path / v if k == "out" else v) for k, v in over.items()})
    cfg = RuntimeConfig(sampling={"max_new_tokens": 12})
    with pytest.raises(UserError, match=match):
        collect(NoDecode(), task, task.problems(1, 0), cfg, **kw)


def test_resume_with_other_settings_is_refused_naming_the_setting(tiny_lm, tmp_path):
    """`calibrate --n-max 16` onto a file recorded with 4 paths: before, "0 new records"; now refused."""
    task = raw_task(tmp_path, [(f"Q{i}+1=", str(i + 1)) for i in range(2)])
    out = tmp_path / "calib.jsonl"
    cfg = RuntimeConfig(sampling={"max_new_tokens": 8, "temperature": 1.0})
    kw = dict(out=out, prefix_lens=[3], scorers={"confidence": {}}, model_id="tiny", concurrency=2)
    be = LocalBackend(*tiny_lm)
    try:
        assert collect(be, task, task.problems(1, 0), cfg, n_max=2, **kw) == 1
    finally:
        be.shutdown()
    before = out.read_bytes()
    with pytest.raises(UserError, match=r"recorded with n_max=2, this run has n_max=16"):
        collect(NoDecode(), task, task.problems(2, 0), cfg, n_max=16, **kw)
    with pytest.raises(UserError, match=r"recorded with scorers=.*confidence.*this run has scorers=.*entropy"):
        collect(NoDecode(), task, task.problems(2, 0), cfg, n_max=2, **{**kw, "scorers": {"entropy": {}}})
    other = RuntimeConfig(sampling={"max_new_tokens": 8, "temperature": 0.5})
    with pytest.raises(UserError, match=r"recorded with sampling="):
        collect(NoDecode(), task, task.problems(2, 0), other, n_max=2, **kw)
    assert out.read_bytes() == before
    # another model's weights: refused once the model is known (same settings otherwise)
    from tests.conftest import make_tiny_llama

    be = LocalBackend(make_tiny_llama(len(tiny_lm[1]), seed=1), tiny_lm[1])
    try:
        with pytest.raises(UserError, match=r"recorded with model"):
            collect(be, task, task.problems(2, 0), cfg, n_max=2, **kw)
    finally:
        be.shutdown()
    assert out.read_bytes() == before
    # an older file without a header is refused, not extended
    old = tmp_path / "old.jsonl"
    old.write_text(before.decode().split("\n", 1)[1])
    with pytest.raises(UserError, match=r"no header record"):
        collect(NoDecode(), task, task.problems(2, 0), cfg, n_max=2, **{**kw, "out": old})
    # the headered file loads; errors after the header still name the right line
    assert load_calibration(out).n_problems == 1
    with open(out, "a") as f:
        f.write("{bad\n")
    with pytest.raises(UserError, match=r"calib.jsonl:3: invalid JSON"):
        load_calibration(out)
