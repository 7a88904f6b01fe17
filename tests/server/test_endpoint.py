"""StopEndpoint against the real server: an SGLang program forks branches, generates a prefix, scores it
through the backend, continues; ids are kept per branch (no re-tokenising) and greedy output equals the
in-process (Hugging Face) greedy output token for token."""

from __future__ import annotations

import pytest
import sglang as sgl
import torch

pytestmark = pytest.mark.server

N, PREFIX, REST = 3, 8, 8
PROMPT = "Let x be the number of apples. Then"


@pytest.fixture(scope="module")
def endpoint(server):
    from sglang_stop.backends.base import PathBackend
    from sglang_stop.backends.endpoint import StopEndpoint

    ep = StopEndpoint(server.url)
    assert isinstance(ep, PathBackend)
    return ep


@sgl.function
def prune_program(s, prompt, be, out):
    s += prompt
    forks = s.fork(N)
    for i, f in enumerate(forks):
        be.bind_branch(f, index=i, seed=100 + i)
    forks += sgl.gen("prefix", max_tokens=PREFIX, temperature=0.0)
    for f in forks:
        f["prefix"]  # wait for the branch
    views = [be.branch_view(f, i) for i, f in enumerate(forks)]
    out["views"] = views
    out["scores"] = be.stop_score([v.handle for v in views])
    keep = max(range(N), key=lambda i: out["scores"][i])
    for i, f in enumerate(forks):
        if i != keep:
            be.release(f)
    kept = forks[keep]
    kept += sgl.gen("rest", max_tokens=REST, temperature=0.0)
    kept["rest"]
    out["final"] = be.branch_view(kept, keep)


@torch.no_grad()
def test_program_runs_against_server(endpoint, artifacts, reference):
    from transformers import AutoModelForCausalLM

    out: dict = {}
    state = prune_program.run(prompt=PROMPT, be=endpoint, out=out, backend=endpoint)
    assert state.error() is None if hasattr(state, "error") else True
    views, final = out["views"], out["final"]
    assert len(views) == N and all(len(v.generated_ids) == PREFIX for v in views)
    # Scores of the branch ids equal the torch reference.
    for v, s in zip(views, out["scores"]):
        assert abs(s - reference.score(v.token_ids)) <= 1e-4
    # Greedy through the server == greedy in process, token for token.
    model = AutoModelForCausalLM.from_pretrained(artifacts.model, dtype=torch.float32).eval()
    prompt_ids = final.prompt_ids
    hf = model.generate(torch.tensor([prompt_ids]), max_new_tokens=PREFIX + REST, do_sample=False,
                        pad_token_id=0)[0, len(prompt_ids):].tolist()
    assert final.generated_ids == hf
    u = endpoint.usage()
    assert u.reencoded_tokens == 0  # the continuation reused the branch's KV (ids, not text, were sent)
    assert u.generated_tokens == N * PREFIX + REST
