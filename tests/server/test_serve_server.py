"""`sglang-stop serve --server URL` against the REAL SGLang server (the CPU harness): the official
`openai` client gets a chat completion whose usage counts every path's tokens, and the paths match the
program run directly on the same server."""

from __future__ import annotations

import pytest
import yaml

from sglang_stop.config import load_config
from sglang_stop.program import parallel_reasoning
from sglang_stop.tasks import QUESTION_ID
from sglang_stop.serve.schemas import ChatRequest

pytestmark = pytest.mark.server
openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

from sglang_stop.serve.background import serving  # noqa: E402

CONFIG = {"n": 3, "stages": [{"prefix_len": 6, "keep": 1}], "scorer": {"name": "stop"}, "task": "testbed",
          "sampling": {"temperature": 0.0, "max_new_tokens": 14}}


def test_openai_client_through_serve_on_a_real_server(server, tmp_path):
    from sglang_stop.backends.endpoint import StopEndpoint
    from sglang_stop.serve.server import build_server
    from sglang_stop.serve.engine import RawPromptTask

    cfg_file = tmp_path / "serve.yaml"
    cfg_file.write_text(yaml.safe_dump(CONFIG))
    engine, app = build_server(str(cfg_file), None, (server.url,), 4)
    with serving(app) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=300)
        r = client.chat.completions.create(model=engine.model_name,
                                           messages=[{"role": "user", "content": "First compute 12 * 7 ="}])
    ext = r.usage.model_extra["sglang_stop"]
    assert r.usage.completion_tokens == sum(p["tokens"] for p in ext["paths"]) > 0
    assert ext["paths_launched"] == 3 and ext["paths_pruned"] == 2
    # the same prompt through the program directly on the server: the same paths
    cfg = load_config(cfg_file).model_copy(update={"chat_template": False})
    prompt = engine.chat_prompt(ChatRequest(messages=[{"role": "user", "content": "First compute 12 * 7 ="}]), 0)
    direct = parallel_reasoning.run(prompt=prompt, cfg=cfg, scorer=engine.prepare_scorer(cfg, 0),
                                    extract_answer=RawPromptTask(engine.task).extract_answer,
                                    problem_key=QUESTION_ID, backend=StopEndpoint(server.url)).ret_value
    assert [(p.index, p.tokens, p.pruned_at) for p in direct.paths] == [
        (p["index"], p["tokens"], p["pruned_at"]) for p in ext["paths"]]
    assert r.choices[0].message.content == direct.paths[ext["chosen_path"]].text
