"""Crash-safe file writes and JSONL records: a kill mid-run never leaves a truncated file or line."""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from sglang_stop.errors import UserError

M = TypeVar("M", bound=BaseModel)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


class JsonlAppender:
    """Append one record per line with a single write + fsync, so a line is either whole or absent.

    Opening an existing file drops a trailing partial line left by a kill (the only damage an
    interrupted append can do), so resuming never reads or extends a truncated record.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.suffix == ".gz":
            raise UserError(f"{self.path}: appends go to a plain .jsonl file (gzip it once it is complete)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            data = self.path.read_bytes()
            if data and not data.endswith(b"\n"):
                keep = data[: data.rfind(b"\n") + 1]
                atomic_write_bytes(self.path, keep)
        self._f = open(self.path, "ab")

    def append(self, record: BaseModel | dict[str, Any]) -> None:
        obj = record.model_dump(mode="json") if isinstance(record, BaseModel) else record
        line = (json.dumps(obj, separators=(",", ":")) + "\n").encode()
        self._f.write(line)
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_data(path: str | Path) -> bytes:
    """A file's bytes, gunzipped when it ends in ``.gz`` (committed data sets are stored compressed:
    calibration paths repeat a lot, so gzip makes them 5-15x smaller)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: file not found")
    data = p.read_bytes()
    if p.suffix == ".gz":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise UserError(f"{p}: not a readable gzip file ({e})") from None
    return data


def read_jsonl(path: str | Path, model: type[M], *, skip_partial_tail: bool = True) -> Iterator[M]:
    """Yield validated records (plain or ``.gz``); a bad line raises UserError naming ``file:line``
    and the field."""
    p = Path(path)
    lines = read_data(p).split(b"\n")
    last = len(lines)
    for i, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        if i == last and skip_partial_tail:  # no trailing newline: an interrupted append
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise UserError(f"{p}:{i}: invalid JSON: {e.msg}") from None
        try:
            yield model.model_validate(obj)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            raise UserError(f"{p}:{i}: {loc + ': ' if loc else ''}{err['msg']}") from None
