"""Record files: the header record, refusing other settings, and the permissions a normal write gives."""

from __future__ import annotations

import os
import stat

import pytest
from pydantic import BaseModel

from sglang_stop.errors import UserError
from sglang_stop.io import (
    JsonlAppender,
    RecordHeader,
    atomic_write_text,
    default_file_mode,
    open_records,
    read_header,
    read_jsonl,
)


class Rec(BaseModel):
    x: int


def mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_atomic_write_gets_the_umask_mode_not_0600(tmp_path, umask022):
    p = tmp_path / "a.yaml"
    atomic_write_text(p, "x")
    assert mode(p) == 0o644 == default_file_mode()


def test_atomic_write_keeps_an_existing_files_mode(tmp_path, umask022):
    p = tmp_path / "a.txt"
    p.write_text("old")
    os.chmod(p, 0o640)
    atomic_write_text(p, "new")
    assert p.read_text() == "new" and mode(p) == 0o640


def test_resuming_a_torn_file_keeps_its_mode(tmp_path, umask022):
    p = tmp_path / "r.jsonl"
    p.write_text('{"x": 1}\n{"x": 2')  # a kill mid-append
    os.chmod(p, 0o644)
    with JsonlAppender(p) as app:
        app.append(Rec(x=3))
    assert mode(p) == 0o644
    assert [r.x for r in read_jsonl(p, Rec)] == [1, 3]


def test_directory_path_is_one_error(tmp_path):
    with pytest.raises(UserError, match="is a directory"):
        atomic_write_text(tmp_path, "x")
    with pytest.raises(UserError, match="is a directory"):
        JsonlAppender(tmp_path)


def test_header_written_first_skipped_by_readers_and_checked_on_resume(tmp_path):
    p = tmp_path / "r.jsonl"
    h = RecordHeader(kind="labels", settings={"K": 16, "prefix_len": 16}, model={"name": "m", "weights_hash": "ab"})
    with open_records(p, h) as app:
        app.append(Rec(x=1))
    assert read_header(p) == h and h.version
    assert [r.x for r in read_jsonl(p, Rec)] == [1]
    with open_records(p, h) as app:  # same settings: appends
        app.append(Rec(x=2))
    assert [r.x for r in read_jsonl(p, Rec)] == [1, 2]
    with pytest.raises(UserError, match=r"recorded with K=16, this run has K=8"):
        open_records(p, h.model_copy(update={"settings": {"K": 8, "prefix_len": 16}}))
    with pytest.raises(UserError, match="model"):
        open_records(p, h.model_copy(update={"model": {"name": "m", "weights_hash": "cd"}}))
    with pytest.raises(UserError, match="holds labels records"):
        open_records(p, h.model_copy(update={"kind": "calibration"}))
    with pytest.raises(UserError, match="pass --resume"):
        open_records(p, h, resume=False)


def test_headerless_file_is_refused_for_appending(tmp_path):
    p = tmp_path / "old.jsonl"
    p.write_text('{"x": 1}\n')
    with pytest.raises(UserError, match="no header record"):
        open_records(p, RecordHeader(kind="labels"))
    assert [r.x for r in read_jsonl(p, Rec)] == [1]  # still readable


def test_read_model_json_is_one_line_naming_the_file(tmp_path):
    from pydantic import BaseModel

    from sglang_stop.io import read_model_json

    class Cfg(BaseModel):
        k: int

    f = tmp_path / "c.json"
    with pytest.raises(UserError, match=r"c\.json: not a thing"):
        read_model_json(f, Cfg, missing="not a thing")
    f.write_text('{"k": "x"}')
    with pytest.raises(UserError, match=r"c\.json: k: Input should be a valid integer"):
        read_model_json(f, Cfg)
    f.write_text("{oops")
    with pytest.raises(UserError, match=r"c\.json: Invalid JSON"):
        read_model_json(f, Cfg)
    f.write_text('{"k": 3}')
    assert read_model_json(f, Cfg).k == 3
