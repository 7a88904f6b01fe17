"""Collect a calibration set for the advisor: every problem run with N_max paths and no pruning,
every scorer called at every recorded prefix length on the paths still running there.

One JSONL line per problem (advisor.calibration.CalibRecord), appended whole with fsync, so a
killed run resumes where it stopped with no duplicate or torn record. The file starts with a
``RecordHeader(kind="calibration")`` of the settings every record shares (n_max, prune points,
scorers and options, sampling, task, prompt, seed) and the model's identity: resuming with other
settings is refused naming the setting, instead of skipping every recorded problem ("0 new records").
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sglang_stop.config import RuntimeConfig
from sglang_stop.errors import UserError
from sglang_stop.models import backend_identity
from sglang_stop.io import RecordHeader, check_header, read_header, tree_hash
from sglang_stop.runner import run_problems
from sglang_stop.scorers.base import Branch, ScoreContext, Scorer
from sglang_stop.scorers.registry import make_scorer
from sglang_stop.tasks import Problem, Task

NOT_RECORDED = {"none", "random"}  # the advisor replays these without recorded scores


class RecordingScorer(Scorer):
    """Calls every wrapped scorer and remembers their scores; keeps every path (returns zeros)."""

    name = "record"

    def __init__(self, scorers: dict[str, Scorer]) -> None:
        super().__init__()
        self.scorers = scorers
        self._lock = threading.Lock()
        # (problem_key, path index) -> scorer -> prefix_len -> score
        self.scores: dict[tuple[str, int], dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))

    def prepare(self, backend: Any) -> None:
        """Every recorded scorer checks (and loads) what it needs before any decoding."""
        for sc in self.scorers.values():
            sc.prepare(backend)

    def score(self, branches: Sequence[Branch], ctx: ScoreContext) -> list[float]:
        for name, sc in self.scorers.items():
            vals = sc.score(branches, ctx)
            with self._lock:
                for b, v in zip(branches, vals):
                    self.scores[(ctx.problem_key, b.index)][name][ctx.prefix_len] = float(v)
        return [0.0] * len(branches)


def check_collect_args(base: RuntimeConfig, n_max: int, prefix_lens: Sequence[int]) -> list[int]:
    """The prune points to record (sorted, unique), or a UserError naming the option; no model needed."""
    if n_max < 1:
        raise UserError(f"--n-max: must be >= 1 path per problem, got {n_max}")
    lens = sorted(set(prefix_lens))
    if not lens or lens[0] < 1:
        raise UserError(f"--prefix-lens: need positive prefix lengths, got {list(prefix_lens)}")
    cap = base.sampling.max_new_tokens
    if lens[-1] >= cap:
        raise UserError(f"--prefix-lens: {lens[-1]} is not below sampling.max_new_tokens ({cap}): a path is "
                        f"never scored at or after its last token; use prefix lengths < {cap} or raise --max-new-tokens")
    _recording_config(base, n_max, lens)
    return lens


def _recording_config(base: RuntimeConfig, n_max: int, lens: Sequence[int]) -> RuntimeConfig:
    """The run config of a calibration: N_max paths, a keep-all stage at every prune point, no consensus."""
    from pydantic import ValidationError

    try:
        return RuntimeConfig.model_validate(
            {
                **base.model_dump(),
                "n": n_max,
                "stages": [{"prefix_len": L, "keep_ratio": 1.0} for L in lens],
                "consensus": None,
            }
        )
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(map(str, err["loc"]))
        opt = {"n": "--n-max", "stages": "--prefix-lens"}.get(str(err["loc"][0]) if err["loc"] else "", loc)
        raise UserError(f"{opt}: {err['msg']}") from None


def calibration_header(
    base: RuntimeConfig, task: Task, *, n_max: int, prefix_lens: Sequence[int], scorers: dict[str, dict[str, Any]],
    model: dict[str, Any] | None = None,
) -> RecordHeader:
    """What every record of a calibration file shares; ``scorers`` are the recorded ones with options."""
    chat = task.chat_template if base.chat_template is None else base.chat_template
    ckpt = scorers.get("stop", {}).get("checkpoint")
    return RecordHeader(
        kind="calibration",
        settings={
            "n_max": n_max,
            "prefix_lens": sorted(set(prefix_lens)),
            "scorers": {k: scorers[k] for k in sorted(scorers)},
            "sampling": base.sampling.model_dump(mode="json"),
            "task": task.spec,
            "prompt": base.prompt,
            "chat_template": chat,
            "seed": base.seed,
        },
        model=model or {},
        scorer_checkpoint=tree_hash(ckpt) if isinstance(ckpt, str) else None,
        seed=base.seed,
    )


def preflight(
    base: RuntimeConfig, task: Task, *, out: str | Path, n_max: int, prefix_lens: Sequence[int],
    scorers: dict[str, dict[str, Any]],
) -> list[int]:
    """Every check that needs no model, for the CLI to run before loading it: the options, and an
    existing ``out`` made with other settings (its model is checked once the model is loaded)."""
    lens = check_collect_args(base, n_max, prefix_lens)
    p = Path(out)
    if p.is_dir():
        raise UserError(f"--out {p}: is a directory, expected a file path")
    if p.suffix == ".gz":
        raise UserError(f"--out {p}: calibration appends go to a plain .jsonl file (gzip it once it is complete)")
    if p.is_file() and p.stat().st_size > 0:
        old = read_header(p)
        if old is None:
            raise UserError(f"--out {p}: has no header record (an older calibration file); record into a new file")
        new = calibration_header(base, task, n_max=n_max, prefix_lens=lens, scorers=_recorded(scorers))
        check_header(p, old, new.model_copy(update={"model": old.model}))
    return lens


def _recorded(scorers: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in scorers.items() if k not in NOT_RECORDED}


def collect(
    backend: Any,
    task: Task,
    problems: Sequence[Problem],
    base: RuntimeConfig,
    *,
    out: str | Path,
    n_max: int,
    prefix_lens: Sequence[int],
    scorers: dict[str, dict[str, Any]],
    model_id: str,
    concurrency: int = 4,
    progress: bool = False,
) -> int:
    """Append a CalibRecord per problem not yet in ``out``; returns how many were added."""
    from sglang_stop.advisor.calibration import CalibPath, CalibRecord
    from sglang_stop.advisor.collect import CalibrationWriter

    lens = preflight(base, task, out=out, n_max=n_max, prefix_lens=prefix_lens, scorers=scorers)
    recorded = _recorded(scorers)
    header = calibration_header(base, task, n_max=n_max, prefix_lens=lens, scorers=recorded,
                                model=backend_identity(backend))
    cfg = _recording_config(base, n_max, lens)
    recorder = RecordingScorer({k: make_scorer(k, v) for k, v in recorded.items()})
    added = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(problems), desc="calibrate")
    with CalibrationWriter(out, header) as writer:
        todo = [p for p in problems if p.id not in writer.done]
        if bar is not None:
            bar.update(len(problems) - len(todo))
        step = max(1, concurrency)
        for i in range(0, len(todo), step):
            chunk = todo[i : i + step]
            results, _ = run_problems(backend, task, chunk, cfg, concurrency=step, scorer=recorder)
            for prob, res in zip(chunk, results):
                paths = []
                for path, ok in zip(res.paths, res.path_correct):
                    got = recorder.scores.pop((prob.id, path.index), {})
                    paths.append(
                        CalibPath(
                            answer=path.answer,
                            correct=ok,
                            length=path.tokens,
                            scores={name: dict(got.get(name, {})) for name in recorded},
                        )
                    )
                writer.append(
                    CalibRecord(
                        problem_id=prob.id,
                        task=task.spec,
                        model_id=model_id,
                        model=cfg.model,
                        n_max=n_max,
                        prefix_lens=lens,
                        scorers=sorted(recorded),
                        scorer_options={k: v for k, v in recorded.items()},
                        sampling=cfg.sampling,
                        prompt=cfg.prompt,
                        chat_template=task.chat_template if cfg.chat_template is None else cfg.chat_template,
                        seed=cfg.seed,
                        reference=prob.answer,
                        paths=paths,
                    )
                )
                added += 1
            if bar is not None:
                bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return added
