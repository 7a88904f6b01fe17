"""The package list in pyproject.toml covers every package of the tree (it is written out because
the top-level advisor/ folder installs as ``sglang_stop.advisor``), and the installed import works."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "sglang_stop").rglob("__init__.py")}
    found |= {"sglang_stop." + ".".join(p.parent.relative_to(ROOT).parts)
              for p in (ROOT / "advisor").rglob("__init__.py")}
    data = {"sglang_stop.assets", "sglang_stop.assets.testbed", "sglang_stop.advisor.data"}  # package data only
    assert set(cfg["packages"]) == found | data
    for pkg in data:
        parts = pkg.split(".")
        where = ROOT / "advisor" / Path(*parts[2:]) if parts[1] == "advisor" else ROOT / Path(*parts)
        assert where.is_dir(), pkg
    assert cfg["package-dir"] == {"sglang_stop.advisor": "advisor"}


def test_advisor_imports_under_the_package_namespace_only(tmp_path: Path) -> None:
    code = ("import importlib.util, sglang_stop.advisor.replay as r; print(r.__file__); "
            "print(importlib.util.find_spec('advisor') is None)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True)
    path, no_bare = out.stdout.split()
    assert Path(path) == ROOT / "advisor" / "replay.py" and no_bare == "True"
