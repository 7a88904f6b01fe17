"""`calibrate` writes records the advisor loads, and a rerun after a kill adds no duplicate."""

from __future__ import annotations

import re

from advisor.calibration import load_calibration
from sglang_stop.backends.local import LocalBackend
from sglang_stop.calibrate import collect
from sglang_stop.config import RuntimeConfig
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
    lines = out.read_text().splitlines()
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
    from advisor.check import check_exact
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
