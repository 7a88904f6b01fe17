"""Collect a calibration set for the advisor: every problem run with N_max paths and no pruning,
every scorer called at every recorded prefix length on the paths still running there.

One JSONL line per problem (advisor.calibration.CalibRecord), appended whole with fsync, so a
killed run resumes where it stopped with no duplicate or torn record.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sglang_stop.config import RuntimeConfig
from sglang_stop.errors import UserError
from sglang_stop.runner import run_problems
from sglang_stop.scorers.base import Branch, ScoreContext, Scorer, make_scorer
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

    def score(self, branches: Sequence[Branch], ctx: ScoreContext) -> list[float]:
        for name, sc in self.scorers.items():
            vals = sc.score(branches, ctx)
            with self._lock:
                for b, v in zip(branches, vals):
                    self.scores[(ctx.problem_key, b.index)][name][ctx.prefix_len] = float(v)
        return [0.0] * len(branches)


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
    from advisor.calibration import CalibPath, CalibRecord
    from advisor.collect import CalibrationWriter

    lens = sorted(set(prefix_lens))
    if not lens or lens[0] < 1:
        raise UserError(f"--prefix-lens: need positive prefix lengths, got {list(prefix_lens)}")
    recorded = {k: v for k, v in scorers.items() if k not in NOT_RECORDED}
    cfg = RuntimeConfig.model_validate(
        {
            **base.model_dump(),
            "n": n_max,
            "stages": [{"prefix_len": L, "keep_ratio": 1.0} for L in lens],
            "consensus": None,
        }
    )
    recorder = RecordingScorer({k: make_scorer(k, v) for k, v in recorded.items()})
    added = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(problems), desc="calibrate")
    with CalibrationWriter(out) as writer:
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
