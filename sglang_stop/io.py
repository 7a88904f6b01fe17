"""Crash-safe file writes and JSONL records: a kill mid-run never leaves a truncated file or line.

Every record file the project writes (run results, labels, calibration) starts with one header line,
``{"header": {...}}`` (:class:`RecordHeader`): what made the file. Appending or resuming with other
settings is refused naming the setting (:func:`open_records`); readers skip the header.
Files get the permissions a plain ``open(path, "w")`` would give (the umask), not mkstemp's 0600.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sglang_stop.errors import UserError, validation_message

if TYPE_CHECKING:
    from typing import Self  # 3.11; annotations only

M = TypeVar("M", bound=BaseModel)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file here (0666 less the umask)."""
    return 0o666 & ~_umask()


def default_dir_mode() -> int:
    """The mode ``mkdir`` gives a new directory here (0777 less the umask)."""
    return 0o777 & ~_umask()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write via a temp file + rename. The file keeps an existing file's mode, else the umask's."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{p}: is a directory, expected a file path")
    p.parent.mkdir(parents=True, exist_ok=True)
    mode = p.stat().st_mode & 0o7777 if p.exists() else default_file_mode()
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(path: str | Path, obj: Any) -> None:
    """``torch.save`` by :func:`atomic_write_bytes`: a training state killed mid-write leaves the last one."""
    import torch  # this module stays importable without torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def chmod_default(root: str | Path) -> None:
    """Give ``root`` and everything below it the modes a plain mkdir / open would (mkdtemp and
    mkstemp make 0700 / 0600, which another user or a server process could not read)."""
    dmode, fmode = default_dir_mode(), default_file_mode()
    top = Path(root)
    for sub in [top, *top.rglob("*")]:
        os.chmod(sub, dmode if sub.is_dir() else fmode)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Build a directory in a temp dir beside ``path``, then rename it over ``path``: readers never see
    half of it. The result gets the umask's modes (:func:`chmod_default`), like a plain ``mkdir``."""
    dest = Path(path)
    if dest.exists() and not dest.is_dir():
        raise UserError(f"{dest}: exists and is not a directory")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        yield tmp
        chmod_default(tmp)
        old = None
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old.{os.getpid()}")
            os.replace(dest, old)
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class Closing:
    """``with x:`` closes ``x`` on the way out (the writers here hold a file open for appends)."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class JsonlAppender(Closing):
    """Append one record per line with a single write + fsync, so a line is either whole or absent.

    Opening an existing file drops a trailing partial line left by a kill (the only damage an
    interrupted append can do), so resuming never reads or extends a truncated record.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise UserError(f"{self.path}: is a directory, expected a file path")
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


def _is_header(obj: Any) -> bool:
    return isinstance(obj, dict) and set(obj) == {"header"}


def read_model_json(path: str | Path, model: type[M], *, missing: str = "file not found") -> M:
    """A JSON file validated as ``model``; a missing, unreadable or invalid one is one UserError naming
    the file (``missing`` says what the file should have been)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: {missing}")
    try:
        return model.model_validate_json(p.read_bytes())
    except ValidationError as e:
        raise UserError(validation_message(e, str(p))) from None
    except OSError as e:
        raise UserError(f"{p}: unreadable ({e.strerror})") from None


def read_jsonl(path: str | Path, model: type[M], *, skip_partial_tail: bool = True) -> Iterator[M]:
    """Yield validated records (plain or ``.gz``); a bad line raises UserError naming ``file:line``
    and the field. The header line, if any, is skipped (:func:`read_header` reads it)."""
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
        if _is_header(obj):
            continue
        try:
            yield model.model_validate(obj)
        except ValidationError as e:
            raise UserError(validation_message(e, f"{p}:{i}")) from None


class RecordHeader(BaseModel):
    """The first line of a record file: what made it. ``settings`` are the values a resumed or
    appended run must repeat (compared key by key); the rest is provenance."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(description="what the records are: run-results, labels, calibration")
    settings: dict[str, Any] = Field(default_factory=dict, description="must match to append or resume")
    model: dict[str, Any] = Field(default_factory=dict, description="model identity: name, weights hash")
    scorer_checkpoint: str | None = Field(None, description="hash of the scorer checkpoint, if any")
    seed: int | None = None
    version: str = Field(default="", description="sglang-stop version that wrote the file")

    def model_post_init(self, _ctx: Any) -> None:
        if not self.version:
            from sglang_stop.version import __version__

            self.version = __version__


def read_header(path: str | Path) -> RecordHeader | None:
    """The file's header record, or None (no file, empty file, or an older file without one)."""
    p = Path(path)
    if not p.is_file():
        return None
    first = read_data(p).split(b"\n", 1)[0].strip()
    if not first:
        return None
    try:
        obj = json.loads(first)
    except json.JSONDecodeError:
        return None
    if not _is_header(obj):
        return None
    try:
        return RecordHeader.model_validate(obj["header"])
    except ValidationError as e:
        raise UserError(validation_message(e, f"{p}:1", prefix="header.")) from None


def _jsonable(v: Any) -> Any:
    return json.loads(json.dumps(v, default=str))


def check_header(path: str | Path, old: RecordHeader, new: RecordHeader) -> None:
    """Refuse to extend a file made with other settings, naming the first setting that differs."""
    p = Path(path)
    if old.kind != new.kind:
        raise UserError(f"{p}: holds {old.kind} records, not {new.kind}; use another file")
    a, b = _jsonable(old.settings), _jsonable(new.settings)
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            raise UserError(
                f"{p}: recorded with {key}={json.dumps(a.get(key))}, this run has {key}={json.dumps(b.get(key))}; "
                f"use the same settings or another output file"
            )
    for field, label in (("model", "model"), ("scorer_checkpoint", "scorer checkpoint")):
        if _jsonable(getattr(old, field)) != _jsonable(getattr(new, field)):
            raise UserError(
                f"{p}: recorded with {label} {json.dumps(_jsonable(getattr(old, field)))}, this run has "
                f"{json.dumps(_jsonable(getattr(new, field)))}; use another output file"
            )


def open_records(path: str | Path, header: RecordHeader, *, resume: bool = True) -> JsonlAppender:
    """An appender for a record file that starts with ``header``.

    A new or empty file gets the header first. An existing one is extended only when ``resume`` and
    its header matches (:func:`check_header`); one without a header (an older version) is refused.
    """
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{p}: is a directory, expected a file path")
    exists = p.is_file() and p.stat().st_size > 0
    if exists:
        if not resume:
            raise UserError(f"{p}: exists; pass --resume to continue it, or choose another output file")
        old = read_header(p)
        if old is None:
            raise UserError(f"{p}: has no header record (written by an older version); use another output file")
        check_header(p, old, header)
    app = JsonlAppender(p)
    if not exists:
        app.append({"header": header.model_dump(mode="json")})
    return app


def tree_hash(path: str | Path) -> str | None:
    """A short hash of a file or of every file under a directory (relative names + bytes): what a
    record header stores of a scorer checkpoint. None if the path does not exist."""
    import hashlib

    p = Path(path)
    if not p.exists():
        return None
    h = hashlib.blake2b(digest_size=8)
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    for f in files:
        h.update(str(f.relative_to(p) if f != p else f.name).encode() + b"\0")
        h.update(f.read_bytes())
    return h.hexdigest()
