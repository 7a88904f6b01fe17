"""Monte Carlo labels: s_mc = fraction of K continuations of a prefix that end with the right answer.

For each problem, P prefixes of ``prefix_len`` generated tokens are sampled, then K continuations
of each; one :class:`LabelRecord` per prefix is appended (atomically, one line) to a JSONL file.
Re-running skips (problem, prefix idx) pairs already there. Prefixes are seeded per problem, so a
resumed run labels the same prefixes; continuations are sampled in batches across problems (one
seed per batch), so theirs are fresh draws of the same distribution. The file starts with a
``RecordHeader(kind="labels")`` of the job's settings and the model's identity: resuming with another
K, prefix length, sampling, task or model is refused naming the setting (``io.open_records``);
older headerless files are still read (``load_labels``) but never extended.

Sampling goes through a :data:`Sampler` callable ("continue these token ids"), so the in-process
HF sampler used for the testbed can be swapped for the runtime backend without touching this file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from sglang_stop.errors import UserError
from sglang_stop.io import RecordHeader, open_records, read_jsonl
from sglang_stop.training.hf_sampler import SampleParams

LABEL_SCHEMA: Literal[1] = 1

# sampler(prompts, params, seed) -> generated token ids per prompt (EOS stripped)
Sampler = Callable[[Sequence[Sequence[int]], SampleParams, int], list[list[int]]]


class LabelRecord(BaseModel):
    schema_version: Literal[1] = LABEL_SCHEMA
    problem_id: str
    question: str
    answer: str
    prefix_idx: int
    token_ids: list[int] = Field(description="prompt + prefix, what the scorer sees")
    prompt_len: int
    prefix_len: int = Field(description="generated tokens in the prefix")
    prefix_text: str
    s_mc: float = Field(ge=0.0, le=1.0)
    K: int
    cont_lengths: list[int] = Field(description="full generated length (prefix + continuation) of each continuation")
    cont_answers: list[str | None]
    cont_token_ids: list[list[int]] | None = Field(
        None, description="each continuation's tokens (after the prefix): the whole paths, for replaying a "
        "policy that reads every token (DeepConf online); absent in files written before they were kept",
    )
    seed: int


class LabelJob(BaseModel):
    prefixes: int = Field(8, ge=1, description="P: prefixes per problem")
    continuations: int = Field(16, ge=1, description="K: continuations per prefix")
    prefix_len: int = Field(16, ge=1, description="prune point, in generated tokens")
    max_new_tokens: int = Field(64, ge=2, description="full path cap (prefix included)")
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    seed: int = 0
    problems_per_batch: int = Field(8, ge=1, description="problems sampled together (one sampler call)")

    @model_validator(mode="after")
    def _prefix_inside_path(self) -> LabelJob:
        if self.prefix_len >= self.max_new_tokens:
            raise UserError(
                f"--prefix-len {self.prefix_len} must be below --max-new-tokens {self.max_new_tokens} "
                "(no tokens would be left to continue, so every prefix would be dropped)"
            )
        return self

    def settings(self) -> dict[str, object]:
        """What a resumed file must repeat: everything that changes a label (not the batching)."""
        return self.model_dump(exclude={"problems_per_batch"})


def label_header(job: LabelJob, model: dict[str, str] | None = None, **settings: object) -> RecordHeader:
    """The labels file's header: the job's settings plus ``settings`` (task, split, ...) and the model."""
    return RecordHeader(kind="labels", settings={**job.settings(), **settings}, model=model or {}, seed=job.seed)


def _seed(job_seed: int, problem_id: str, stage: str) -> int:
    return int(hashlib.sha256(f"{job_seed}:{problem_id}:{stage}".encode()).hexdigest()[:8], 16)


def done_pairs(path: str | Path) -> set[tuple[str, int]]:
    p = Path(path)
    if not p.exists():
        return set()
    return {(r.problem_id, r.prefix_idx) for r in read_jsonl(p, LabelRecord)}


def label_problems(
    problems: Sequence[dict],
    out: str | Path,
    job: LabelJob,
    sampler: Sampler,
    encode_prompt: Callable[[str], list[int]],
    decode: Callable[[list[int]], str],
    check: Callable[[dict, str], tuple[str | None, bool]],
    progress: Callable[[int, int], None] | None = None,
    header: RecordHeader | None = None,
) -> int:
    """Append records for every missing (problem, prefix) pair; returns how many were written.

    ``check(problem, generated_text) -> (extracted answer, correct)`` is the task's own scoring
    (reasoning-gym's for its tasks). Prefixes that finish before ``prefix_len`` tokens are dropped
    (nothing left to prune). ``header`` (default: the job's settings alone) must match an existing file's.
    """
    app = open_records(out, header or label_header(job))  # refuses other settings, headerless files
    done = done_pairs(out)
    todo = [p for p in problems if any((p["id"], i) not in done for i in range(job.prefixes))]
    base = SampleParams(temperature=job.temperature, top_p=job.top_p, top_k=job.top_k, max_new_tokens=job.prefix_len)
    written = 0
    if progress is not None:
        progress(0, len(todo))
    with app:
        for s in range(0, len(todo), job.problems_per_batch):
            group = todo[s : s + job.problems_per_batch]
            prompts = {p["id"]: encode_prompt(p["question"]) for p in group}
            # Prefixes: one sampler call per problem so each problem's draws depend on its seed only.
            pref: dict[str, list[list[int]]] = {
                p["id"]: sampler([prompts[p["id"]]] * job.prefixes, base, _seed(job.seed, p["id"], "prefix")) for p in group
            }
            jobs = [
                (p, i, g)
                for p in group
                for i, g in enumerate(pref[p["id"]])
                if (p["id"], i) not in done and len(g) == job.prefix_len
            ]
            if not jobs:
                continue
            cont_params = base.model_copy(update={"max_new_tokens": job.max_new_tokens - job.prefix_len})
            rows = [prompts[p["id"]] + g for p, _, g in jobs for _ in range(job.continuations)]
            seed = _seed(job.seed, "|".join(p["id"] for p in group), "cont")
            conts = sampler(rows, cont_params, seed)
            for j, (p, i, g) in enumerate(jobs):
                cs = conts[j * job.continuations : (j + 1) * job.continuations]
                prefix_text = decode(g)
                verdicts = [check(p, prefix_text + decode(c)) for c in cs]
                answers = [a for a, _ in verdicts]
                app.append(
                    LabelRecord(
                        problem_id=p["id"],
                        question=p["question"],
                        answer=str(p["answer"]),
                        prefix_idx=i,
                        token_ids=prompts[p["id"]] + g,
                        prompt_len=len(prompts[p["id"]]),
                        prefix_len=len(g),
                        prefix_text=prefix_text,
                        s_mc=sum(ok for _, ok in verdicts) / len(cs),
                        K=len(cs),
                        cont_lengths=[len(g) + len(c) for c in cs],
                        cont_answers=answers,
                        cont_token_ids=[list(c) for c in cs],
                        seed=job.seed,
                    )
                )
                written += 1
            if progress is not None:
                progress(min(s + job.problems_per_batch, len(todo)), len(todo))
    return written


def recut(records: Sequence[LabelRecord], prefix_len: int, decode: Callable[[list[int]], str]) -> list[LabelRecord]:
    """Whole-path records (K=1: one path per record, as ``label -P 16 -K 1`` writes them) cut at a later
    prune point: the same paths and outcomes, a longer prefix. Paths that end before ``prefix_len`` are
    dropped, as :func:`label_problems` drops such prefixes (nothing left to prune)."""
    out = []
    for r in records:
        if r.K != 1 or not r.cont_token_ids:
            raise UserError(f"--prefix-len: record {r.problem_id}/{r.prefix_idx} is not a whole path (K=1 with its "
                            "tokens); only whole-path labels can be cut at another prune point")
        if prefix_len < r.prefix_len:
            raise UserError(f"--prefix-len {prefix_len}: below the records' prune point {r.prefix_len}")
        gen = r.token_ids[r.prompt_len :] + r.cont_token_ids[0]
        if len(gen) <= prefix_len:
            continue
        g = gen[:prefix_len]
        out.append(r.model_copy(update={"token_ids": r.token_ids[: r.prompt_len] + g, "prefix_len": prefix_len,
                                        "prefix_text": decode(g), "cont_token_ids": [gen[prefix_len:]]}))
    return out


def load_labels(path: str | Path) -> list[LabelRecord]:
    return list(read_jsonl(path, LabelRecord))
