"""The runtime spine's SGLang program, unchanged, against the real server (StopEndpoint) and in process
(LocalBackend): with greedy sampling both give the same paths and answers."""

from __future__ import annotations

import pytest
import torch

from sglang_stop.config import RuntimeConfig
from sglang_stop.program import parallel_reasoning
from sglang_stop.scorers import Scorer

pytestmark = pytest.mark.server


class StopLike(Scorer):
    """STOP scores: the server's /stop/score, or the torch reference on the same token ids in process."""

    def __init__(self, reference):
        super().__init__()
        self.reference = reference

    def score(self, branches, ctx):
        if hasattr(ctx.backend, "stop_score"):
            return ctx.backend.stop_score([b.handle for b in branches])
        return [self.reference.score(b.token_ids) for b in branches]


def _run(backend, scorer, prompt, key):
    cfg = RuntimeConfig.model_validate(
        {"n": 3, "stages": [{"prefix_len": 6, "keep": 1}], "chat_template": False,
         "sampling": {"temperature": 0.0, "max_new_tokens": 14}}
    )
    return parallel_reasoning.run(
        prompt=prompt, cfg=cfg, scorer=scorer, extract_answer=lambda t: t[:4] or None, problem_key=key,
        backend=backend,
    ).ret_value


@torch.no_grad()
def test_same_answers_server_and_in_process(server, artifacts, reference):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sglang_stop.backends.endpoint import StopEndpoint
    from sglang_stop.backends.local import LocalBackend

    model = AutoModelForCausalLM.from_pretrained(artifacts.model, dtype=torch.float32).eval()
    local = LocalBackend(model, AutoTokenizer.from_pretrained(artifacts.model), model_name="tiny")
    remote = StopEndpoint(server.url)
    scorer = StopLike(reference)
    try:
        for i, prompt in enumerate(["Let x be 5. The answer is", "First compute 12 * 7 ="]):
            a = _run(local, scorer, prompt, f"p{i}")
            b = _run(remote, scorer, prompt, f"p{i}")
            assert b.answer == a.answer
            assert [(p.index, p.text, p.tokens, p.pruned_at) for p in b.paths] == [
                (p.index, p.text, p.tokens, p.pruned_at) for p in a.paths
            ]
            for pa, pb in zip(a.paths, b.paths):
                assert pb.scores == pytest.approx(pa.scores, abs=1e-4)
    finally:
        local.shutdown()
        remote.shutdown()
    assert remote.usage().reencoded_tokens == 0


def test_cli_run_against_server(server):
    """`sglang-stop run --server URL` drives the real server end to end (sampling, seeds, pruning)."""
    import json

    from click.testing import CliRunner

    from sglang_stop.cli import cli

    res = CliRunner().invoke(
        cli,
        ["run", "--server", server.url, "--task", "chain_sum", "--problems", "2", "--n", "4", "--prefix-len", "6",
         "--keep", "2", "--max-new-tokens", "16", "--scorer", "confidence", "--json"],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.output[res.output.index("{"):])
    assert out, res.output
