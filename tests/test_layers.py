"""Imports point down the layers and never run in a circle (docs/architecture.md has the layer table).

Read statically from the source (every ``import``/``from`` statement, also those inside functions), so a
lazy import that runs upward counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Lowest first. A module may import its own layer or any below; longest prefix wins.
LAYERS: list[list[str]] = [
    ["sglang_stop.version", "sglang_stop.errors", "sglang_stop.io", "sglang_stop.policy", "sglang_stop.tables",
     "sglang_stop.signals"],
    ["sglang_stop.config", "sglang_stop.models", "sglang_stop.attention", "sglang_stop.kvcache",
     "sglang_stop.padding", "sglang_stop.aggregate"],
    ["sglang_stop.tasks", "sglang_stop.testbed", "sglang_stop.scorers", "sglang_stop.backends"],
    ["sglang_stop.program"],
    ["sglang_stop.runner", "sglang_stop.bench", "sglang_stop.training", "sglang_stop.testbed.train",
     "sglang_stop.report", "sglang_stop.calibrate", "sglang_stop.advisor"],
    ["sglang_stop.api", "sglang_stop.run_command", "sglang_stop.serve", "sglang_stop.srt"],
    ["sglang_stop", "sglang_stop.cli_errors", "sglang_stop.cli", "sglang_stop.report_cli",
     "sglang_stop.training.cli", "sglang_stop.advisor.cli", "sglang_stop.serve.cli", "sglang_stop.serve.__main__"],
]


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "advisor":  # the top-level folder installs as sglang_stop.advisor (pyproject package-dir)
        parts.insert(0, "sglang_stop")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(mod: str) -> int:
    best, best_len = None, -1
    for i, names in enumerate(LAYERS):
        for n in names:
            if (mod == n or mod.startswith(n + ".")) and len(n) > best_len:
                best, best_len = i, len(n)
    assert best is not None, f"{mod} is in no layer: add it to LAYERS and docs/architecture.md"
    return best


def imports(path: Path, mod: str) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.add(target)
            out.update(f"{target}.{a.name}" for a in node.names)
    return {m for m in out if m.split(".")[0] == "sglang_stop"}


def package_modules() -> dict[str, Path]:
    files = [p for d in ("sglang_stop", "advisor") for p in (ROOT / d).rglob("*.py")]
    return {module_name(p): p for p in files}


def resolve(name: str, known: dict[str, Path]) -> str | None:
    """An imported name -> the module that defines it (``from a.b import c``: a.b.c if a module, else a.b)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def graph() -> dict[str, set[str]]:
    known = package_modules()
    g: dict[str, set[str]] = {}
    for mod, path in known.items():
        deps = {resolve(n, known) for n in imports(path, mod)}
        g[mod] = {d for d in deps if d and d != mod and not mod.startswith(d + ".") and d != "sglang_stop"}
    return g


def test_no_import_runs_upward():
    bad = [f"{m} (layer {layer_of(m)}) imports {d} (layer {layer_of(d)})"
           for m, deps in sorted(graph().items()) for d in sorted(deps) if layer_of(d) > layer_of(m)]
    assert not bad, "\n".join(bad)


def test_no_import_circle():
    g = graph()
    seen: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def visit(m: str) -> None:
        seen[m] = 1
        stack.append(m)
        for d in sorted(g.get(m, ())):
            if seen.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in seen:
                visit(d)
        stack.pop()
        seen[m] = 2

    for m in sorted(g):
        if m not in seen:
            visit(m)
    assert not cycles, "\n".join(cycles)
