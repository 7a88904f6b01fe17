from __future__ import annotations

import json

import pytest

from sglang_stop.advisor.calibration import CalibRecord, load_calibration
from sglang_stop.advisor.synthetic import synthetic_records, write_synthetic
from sglang_stop.errors import UserError


def _record(**over) -> dict:
    rec = {
        "schema_version": 1, "problem_id": "p0", "task": "t", "model_id": "m", "n_max": 2,
        "prefix_lens": [10, 20], "scorers": ["s"], "sampling": {"max_new_tokens": 64},
        "paths": [
            {"answer": "A", "correct": True, "length": 30, "scores": {"s": {"10": 0.5, "20": 0.6}}},
            {"answer": None, "correct": False, "length": 5, "scores": {"s": {"10": 0.1, "20": 0.1}}},
        ],
    }
    rec.update(over)
    return rec


def _write(path, recs) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_roundtrip_synthetic(tmp_path):
    f = tmp_path / "c.jsonl"
    write_synthetic(f, 5, preset="testbed", seed=3)
    cs = load_calibration(f)
    assert cs.n_problems == 5 and cs.n_max == 16 and cs.prefix_lens == [32, 64, 96, 128]
    assert set(cs.scores) == {"stop", "confidence", "entropy"}
    assert cs.scores["stop"].shape == (5, 16, 4)
    assert synthetic_records(5, preset="testbed", seed=3)[0] == cs.records[0]  # seeded


def test_string_prefix_keys_accepted(tmp_path):
    f = tmp_path / "c.jsonl"
    _write(f, [_record()])
    cs = load_calibration(f)
    assert cs.scores["s"][0, 0].tolist() == [0.5, 0.6]
    assert cs.answers[0].tolist() == [0, -1]


@pytest.mark.parametrize(
    "line, match",
    [
        ("{not json", r"c.jsonl:2: invalid JSON"),
        (json.dumps(_record(problem_id="p1", n_max=0)), r"c.jsonl:2: n_max"),
        (json.dumps({k: v for k, v in _record(problem_id="p1").items() if k != "task"}), r"c.jsonl:2: task: Field required"),
        (json.dumps(_record(problem_id="p1", paths=[{"answer": "A", "correct": True, "length": 30, "scores": {"s": {"10": 1.0}}}])),
         r"c.jsonl:2: .*paths.0.scores.s: missing prefix_len 20"),
        (json.dumps(_record(problem_id="p1", prefix_lens=[20, 10])), r"c.jsonl:2: prefix_lens"),
        (json.dumps(_record()), r"c.jsonl:2: duplicate problem_id 'p0' \(first at .*c.jsonl:1\)"),
        (json.dumps(_record(problem_id="p1", prefix_lens=[10])), r"c.jsonl:2: prefix_lens \[10\] differ"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, line, match):
    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps(_record()) + "\n" + line + "\n")
    with pytest.raises(UserError, match=match):
        load_calibration(f)


def test_partial_tail_is_ignored_and_blank_lines_counted(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text("\n" + json.dumps(_record()) + "\n" + '{"schema_version": 1, "probl')
    assert load_calibration(f).n_problems == 1
    f.write_text("\n\n" + json.dumps(_record(n_max=1)) + "\n")
    with pytest.raises(UserError, match=r"c.jsonl:3: .*exceed n_max"):
        load_calibration(f)


def test_record_model_rejects_virtual_scorer_and_nan():
    with pytest.raises(ValueError, match="needs no recorded scores"):
        CalibRecord.model_validate(_record(scorers=["random"]))
    bad = _record()
    bad["paths"][0]["scores"]["s"]["10"] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        CalibRecord.model_validate(bad)


def test_writer_resumes_and_drops_torn_tail(tmp_path):
    from sglang_stop.advisor.collect import CalibrationWriter

    f = tmp_path / "c.jsonl"
    recs = synthetic_records(3, preset="testbed", seed=0)
    with CalibrationWriter(f) as w:
        w.append(recs[0])
    with open(f, "ab") as fh:
        fh.write(b'{"schema_version": 1, "problem_id": "synthetic-0001", "ta')  # killed mid-append
    with CalibrationWriter(f) as w:
        assert w.done == {"synthetic-0000"}
        for r in recs:
            if r.problem_id not in w.done:
                w.append(r)
    assert [r.problem_id for r in load_calibration(f).records] == ["synthetic-0000", "synthetic-0001", "synthetic-0002"]


def test_gzipped_set_loads_and_errors_name_its_line(tmp_path):
    import gzip

    from sglang_stop.advisor.collect import CalibrationWriter

    plain, packed = tmp_path / "c.jsonl", tmp_path / "c.jsonl.gz"
    write_synthetic(plain, 4, preset="testbed", seed=1)
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    a, b = load_calibration(plain), load_calibration(packed)
    assert a.records == b.records and (a.lengths == b.lengths).all()
    packed.write_bytes(gzip.compress(plain.read_bytes() + b"{broken\n"))
    with pytest.raises(UserError, match=r"c.jsonl.gz:5: invalid JSON"):
        load_calibration(packed)
    with pytest.raises(UserError, match="plain .jsonl"):
        CalibrationWriter(packed)


def test_short_record_capping_n_is_reported_with_file_line_and_count(tmp_path):
    """A record of 3 paths among records of 32 caps every problem at 3 paths: said, not silent."""
    f = tmp_path / "c.jsonl"
    path = {"answer": "A", "correct": True, "length": 30, "scores": {"s": {"10": 0.5, "20": 0.6}}}
    recs = [_record(problem_id=f"p{i}", n_max=32, paths=[path] * (3 if i == 2 else 32)) for i in range(4)]
    _write(f, recs)
    cs = load_calibration(f)
    assert cs.n_max == 3
    assert len(cs.warnings) == 1
    w = cs.warnings[0]
    assert f"{f}:3: problem 'p2' has 3 paths, others up to 32" in w and "N is capped at 3" in w
    _write(f, recs[:2])
    assert load_calibration(f).warnings == []


def test_headers_are_skipped_checked_and_keep_line_numbers(tmp_path):
    """`sglang-stop calibrate` files start with a header; the committed older sets have none."""
    from sglang_stop.io import RecordHeader

    def head(kind="calibration", hash_="aaaa") -> str:
        h = RecordHeader(kind=kind, settings={"n_max": 2}, model={"name": "m", "weights_hash": hash_})
        return json.dumps({"header": h.model_dump(mode="json")}) + "\n"

    f, g = tmp_path / "c.jsonl", tmp_path / "d.jsonl"
    f.write_text(head() + json.dumps(_record()) + "\n" + json.dumps(_record(problem_id="p1")) + "\n")
    cs = load_calibration(f)
    assert cs.n_problems == 2 and cs.model_identity == {"name": "m", "weights_hash": "aaaa"}
    f.write_text(head() + json.dumps(_record()) + "\n" + json.dumps(_record()) + "\n")
    with pytest.raises(UserError, match=r"c.jsonl:3: duplicate problem_id 'p0' \(first at .*c.jsonl:2\)"):
        load_calibration(f)
    f.write_text(head("run-results") + json.dumps(_record()) + "\n")
    with pytest.raises(UserError, match="holds run-results records, not calibration"):
        load_calibration(f)
    f.write_text(head() + json.dumps(_record()) + "\n")
    g.write_text(head(hash_="bbbb") + json.dumps(_record(problem_id="p1")) + "\n")
    with pytest.raises(UserError, match="d.jsonl: recorded on model .*bbbb.*c.jsonl on .*aaaa"):
        load_calibration([f, g])
