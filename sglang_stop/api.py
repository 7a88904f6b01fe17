"""The high-level Python API: ``sglang_stop.solve(question)`` runs one question through the same path as
`sglang-stop run` (the task's prompt, the model's chat template, the runner and the program) and returns
its answer, votes and paths.

The backend is loaded once per model (path, device, dtype) and cached in the process, so repeated calls
pay only for decoding; scorers are cached per (name, options) so a STOP checkpoint loads once. The
config, task and scorer options are validated before any model loads: bad input is one
:class:`UserError` naming the field.
"""

from __future__ import annotations

import atexit
import json
import threading
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from sglang_stop.config import ModelSpec, RuntimeConfig, config_from_dict, load_config
from sglang_stop.errors import UserError
from sglang_stop.program import PathRecord
from sglang_stop.runner import make_backend, run_problems
from sglang_stop.scorers import Scorer, make_scorer, scorer_class
from sglang_stop.tasks import QUESTION_ID, Problem, Task, UngradedTask, load_task

DEFAULT_CONFIG = Path(__file__).parent / "assets" / "default.yaml"
SOURCE = "solve()"  # how config errors from keyword overrides are attributed

_lock = threading.Lock()
_backends: dict[tuple[str | None, str, str], Any] = {}
_scorers: dict[tuple[str, str], Scorer] = {}


class SolveResult(BaseModel):
    question: str
    task: str
    answer: str | None = Field(description="the voted answer; None when every voting path abstained")
    tokens: int = Field(description="sampled tokens, all paths (pruned prefixes included)")
    paths: list[PathRecord]
    votes: dict[str, float] = Field(description="votes (or summed weights) per answer of the paths that voted")
    scorer: str
    stages: list[dict[str, Any]]

    def summary(self) -> str:
        """One paragraph: the answer, its support, and what the paths cost."""
        pruned = sum(p.pruned_at is not None for p in self.paths)
        stopped = sum(p.stopped_by_consensus for p in self.paths)
        votes = ", ".join(f"{a}: {v:g}" for a, v in sorted(self.votes.items(), key=lambda kv: -kv[1])) or "none"
        stages = ", ".join(f"{s['prefix_len']}->{s.get('keep', s.get('keep_ratio'))}" for s in self.stages) or "none"
        extra = f", {stopped} stopped by consensus" if stopped else ""
        answer = self.answer if self.answer is not None else "(no answer)"
        return (f"Answer {answer} (votes {votes}) from {len(self.paths)} paths, {pruned} pruned{extra}; "
                f"{self.tokens} tokens sampled; scorer {self.scorer}, stages {stages}, task {self.task}.")


def _set_path(data: dict[str, Any], dotted: list[str], value: Any, key: str) -> None:
    if len(dotted) == 1 and dotted[0] not in data:
        homes = [sec for sec, sub in data.items() if isinstance(sub, dict) and dotted[0] in sub]
        if len(homes) == 1:  # a bare nested field: say the spelling rather than "unknown key"
            raise UserError(f"{SOURCE}: {key}: a field of {homes[0]}; pass it as {homes[0]}__{key}=")
    node = data
    for part in dotted[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            raise UserError(f"{SOURCE}: {key}: {'.'.join(dotted[:-1])} is not a section of the config")
        node = nxt
    old = node.get(dotted[-1])
    node[dotted[-1]] = {**old, **value} if isinstance(old, dict) and isinstance(value, dict) else value


def build_config(
    config: str | Path | dict[str, Any] | RuntimeConfig | None = None,
    *,
    model: str | None = None,
    scorer: str | None = None,
    checkpoint: str | None = None,
    **overrides: Any,
) -> RuntimeConfig:
    """The config (file, dict, RuntimeConfig or the packaged default) with the overrides, validated as
    one. Overrides are config fields; ``a__b=v`` sets a nested one (``sampling__max_new_tokens=64``), a
    dict merges into its section, and ``prefix_len=`` with ``keep=`` is one prune stage."""
    if config is None:
        base = load_config(DEFAULT_CONFIG)
    elif isinstance(config, RuntimeConfig):
        base = config
    elif isinstance(config, dict):
        base = config_from_dict(config, "config")
    elif isinstance(config, (str, Path)):
        base = load_config(config)
    else:
        raise UserError(f"config: expected a path, a dict or a RuntimeConfig, got {type(config).__name__}")
    data = base.model_dump(mode="json")
    if ("prefix_len" in overrides) != ("keep" in overrides):
        raise UserError(f"{SOURCE}: prefix_len and keep go together (one prune stage)")
    if "prefix_len" in overrides:
        if "stages" in overrides:
            raise UserError(f"{SOURCE}: give stages or prefix_len/keep, not both")
        overrides["stages"] = [{"prefix_len": overrides.pop("prefix_len"), "keep": overrides.pop("keep")}]
    if scorer is not None:
        if not isinstance(scorer, str):
            raise UserError(f"scorer: expected a registered scorer's name, got {type(scorer).__name__}")
        same = data["scorer"]["name"] == scorer
        data["scorer"] = {"name": scorer, "options": data["scorer"]["options"] if same else {}}
        if config is None and "stages" not in overrides and not scorer_class(scorer).prunes:
            data["stages"] = []  # the packaged default's stage is not the caller's; `none` never prunes
    if checkpoint is not None:
        if data["scorer"]["name"] != "stop":
            raise UserError(f"checkpoint: only the stop scorer takes a checkpoint (scorer is {data['scorer']['name']!r})")
        if not Path(checkpoint).is_dir():
            raise UserError(f"checkpoint: {checkpoint}: no such directory")
        data["scorer"]["options"] = {**data["scorer"]["options"], "checkpoint": str(checkpoint)}
    if model is not None:
        data["model"]["path"] = str(model)
    for key, value in overrides.items():
        _set_path(data, key.split("__"), value, key)
    cfg = config_from_dict(data, SOURCE)
    make_scorer(cfg.scorer.name, cfg.scorer.options)  # unknown scorer or bad option -> UserError now
    return cfg


def _model_key(spec: ModelSpec) -> tuple[str | None, str, str]:
    path = str(Path(spec.path).expanduser().resolve()) if spec.path is not None else None
    return path, spec.device, spec.dtype


def get_backend(spec: ModelSpec) -> Any:
    """The in-process backend for ``spec``, loaded on first use and kept for the process."""
    key = _model_key(spec)
    with _lock:
        if key not in _backends:
            _backends[key] = make_backend(spec)
        return _backends[key]


def _get_scorer(cfg: RuntimeConfig) -> Scorer:
    key = (cfg.scorer.name, json.dumps(cfg.scorer.options, sort_keys=True, default=str))
    with _lock:
        if key not in _scorers:
            _scorers[key] = make_scorer(cfg.scorer.name, cfg.scorer.options)
        return _scorers[key]


def clear_cache() -> None:
    """Shut down the cached backends (their scheduler threads) and forget the cached scorers."""
    with _lock:
        backends = list(_backends.values())
        _backends.clear()
        _scorers.clear()
    for b in backends:
        b.shutdown()


atexit.register(clear_cache)


def solve(
    question: str,
    task: str | None = None,
    config: str | Path | dict[str, Any] | RuntimeConfig | None = None,
    model: str | None = None,
    scorer: str | None = None,
    checkpoint: str | None = None,
    *,
    backend: Any = None,
    **overrides: Any,
) -> SolveResult:
    """Answer one question with N pruned, voted paths.

    ``task`` (default: the config's task, else ``default``) gives the prompt and answer format; ``config``
    is a file, dict or RuntimeConfig (default: the packaged one); ``model`` a local HF model directory;
    ``scorer``/``checkpoint`` the pruning scorer (a checkpoint for ``stop``); ``overrides`` are config
    fields (``n=16, prefix_len=32, keep=4, seed=1, sampling__temperature=0.5``). ``backend`` runs on a
    given backend (a server's ``StopEndpoint``) instead of the cached in-process one.
    """
    if not isinstance(question, str) or not question.strip():
        raise UserError("question: must be a non-empty string")
    cfg = build_config(config, model=model, scorer=scorer, checkpoint=checkpoint, **overrides)
    tsk = load_task(task or cfg.task or "default")
    if backend is None:
        backend = get_backend(cfg.model)
    sc = _get_scorer(cfg)  # the runner prepares it (a bad checkpoint fails before decoding)
    problem = Problem(id=QUESTION_ID, question=question, answer="", source=tsk.spec)  # as run --question and serve
    (res,), _ = run_problems(backend, UngradedTask(tsk), [problem], cfg, concurrency=1, scorer=sc)
    return SolveResult(
        question=question, task=tsk.spec, answer=res.predicted, tokens=res.tokens, paths=res.paths,
        votes=res.votes, scorer=cfg.scorer.name,
        stages=[s.model_dump(exclude_none=True) for s in cfg.stages],
    )

