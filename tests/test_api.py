"""`sglang_stop.api.solve`: one question on the testbed model, the backend cache, the vote and the
one-line errors for bad configs (raised before any model loads)."""

from __future__ import annotations

import pytest

from sglang_stop import api
from sglang_stop.errors import UserError
from tests.battery import TESTBED, TESTBED_STOP

QUESTION = "Q4+4+1-8-4="  # 4+4=8;8+1=9;9-8=1;1-4=-3;A-3
KW = dict(model=str(TESTBED), task="testbed", n=4, prefix_len=6, keep=2, sampling__max_new_tokens=40)


@pytest.fixture(autouse=True)
def _fresh_cache():
    api.clear_cache()
    yield
    api.clear_cache()


def test_solve_on_testbed(monkeypatch):
    loads = []
    real = api.make_backend
    monkeypatch.setattr(api, "make_backend", lambda spec: loads.append(spec) or real(spec))
    res = api.solve(QUESTION, **KW)
    text = res.summary()
    assert res.answer == "-3"  # the testbed gets this chain right
    assert len(res.paths) == 4 and sum(p.pruned_at == 0 for p in res.paths) == 2
    assert res.tokens == sum(p.tokens for p in res.paths)
    voters = [p for p in res.paths if p.pruned_at is None]
    assert all(p.text.startswith("4+4=8;") for p in voters)  # the raw testbed prompt, no chat template
    assert res.votes == {"-3": float(sum(p.answer == "-3" for p in voters))}
    assert res.stages == [{"prefix_len": 6, "keep": 2}] and res.scorer == "confidence"
    assert text.startswith("Answer -3 (votes -3: 2)") and "2 pruned" in text and f"{res.tokens} tokens" in text
    again = api.solve(QUESTION, **{**KW, "n": 2, "prefix_len": 6, "keep": 1})
    assert len(loads) == 1  # the model loaded once for both calls
    assert len(again.paths) == 2


def test_mix_task_question_is_not_graded():
    """The default task is a mix: grading a caller's question would ask which component it came from."""
    res = api.solve("Q2+3=", model=str(TESTBED), task="default", scorer="none", n=2, prompt="{question}",
                    sampling__max_new_tokens=8)  # the testbed's 128-token window has no room for the default prompt
    assert res.task == "default" and len(res.paths) == 2 and res.stages == []


def test_bad_input_fails_before_the_model_loads(monkeypatch, tmp_path):
    def no_load(spec):
        raise AssertionError("the model must not load for bad input")

    monkeypatch.setattr(api, "make_backend", no_load)
    cases = [
        (dict(n=0), "solve(): n: "),
        (dict(colour="red"), "solve(): colour: "),
        (dict(sampling__tempreature=0.5), "solve(): sampling.tempreature: "),
        (dict(n__x=1), "solve(): n__x: n is not a section of the config"),
        (dict(max_new_tokens=48), "solve(): max_new_tokens: a field of sampling; pass it as sampling__max_new_tokens="),
        (dict(prefix_len=8), "prefix_len and keep go together"),
        (dict(scorer="nope"), "scorer.name: unknown scorer 'nope'"),
        (dict(checkpoint=str(TESTBED_STOP)), "checkpoint: only the stop scorer takes a checkpoint"),
        (dict(scorer="stop", checkpoint=str(tmp_path / "none")), "checkpoint: "),
        (dict(scorer="confidence", scorer__options={"window": "x"}), "scorer.options.window"),
        (dict(config=str(tmp_path / "missing.yaml")), "missing.yaml: config file not found"),
        (dict(config={"n": 2, "stages": [{"prefix_len": 4, "keep": 3}]}), "stages.0.keep: 3 exceeds"),
        (dict(config=3), "config: expected a path, a dict or a RuntimeConfig"),
        (dict(task="no_such_task"), "no_such_task"),
    ]
    for kwargs, fragment in cases:
        with pytest.raises(UserError) as exc:
            api.solve(QUESTION, **{"model": str(TESTBED), **kwargs})
        assert fragment in str(exc.value), (kwargs, str(exc.value))
        assert "\n" not in str(exc.value)
    with pytest.raises(UserError, match="question: must be a non-empty string"):
        api.solve("  ")


def test_build_config_overrides():
    cfg = api.build_config(n=6, prefix_len=8, keep=3, sampling={"temperature": 0.0}, seed=3)
    assert cfg.n == 6 and [s.keep for s in cfg.stages] == [3] and cfg.seed == 3
    assert cfg.sampling.temperature == 0.0 and cfg.sampling.max_new_tokens == 192  # merged, not replaced
    assert api.build_config(scorer="none").stages == []  # the packaged default's stage is dropped for none
    with pytest.raises(UserError, match="stages: scorer 'none' never prunes"):  # a caller's own stages are not
        api.build_config({"n": 4, "stages": [{"prefix_len": 8, "keep": 2}]}, scorer="none")


def test_bad_checkpoint_is_one_user_error(tmp_path):
    with pytest.raises(UserError, match="scorer.options.checkpoint: .*not a STOP checkpoint"):
        api.solve(QUESTION, **KW, scorer="stop", checkpoint=str(tmp_path))
