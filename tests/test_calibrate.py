"""`calibrate` writes records the advisor loads, and a rerun after a kill adds no duplicate."""

from __future__ import annotations

import re

from advisor.calibration import load_calibration
from sglang_stop.backends.local import LocalBackend
from sglang_stop.calibrate import collect
from sglang_stop.config import RuntimeConfig
from sglang_stop.tasks import JsonlTask


def test_collect_records_every_scorer_and_resumes(tiny_lm, tmp_path):
    data = tmp_path / "p.jsonl"
    data.write_text("".join(f'{{"id": "q{i}", "question": "Q{i}+1=", "answer": "{i + 1}"}}\n' for i in range(3)))
    task = JsonlTask(str(data))
    task.default_prompt = "{question}"
    task.chat_template = False
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
