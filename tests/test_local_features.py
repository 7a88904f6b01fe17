"""SGLang frontend features on the in-process backend, as a user's own program would use them:
streaming, grammar-constrained gens (regex, json_schema, dtype), min_tokens, stop token ids and
logprobs in meta_info. The model is the tiny random Llama with a character vocabulary covering
printable ASCII, so xgrammar can spell JSON with it."""

from __future__ import annotations

import asyncio
import json
import re
import string

import pytest
import sglang as sgl
import torch

from sglang_stop.backends.local import LocalBackend
from tests.conftest import make_tiny_llama

pytest.importorskip("xgrammar")


def ascii_tokenizer():
    """One token per printable ASCII character, plus <pad>/<s>/</s> (ids 0-2, as in conftest)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>"]
    vocab = {t: i for i, t in enumerate(specials + sorted(set(string.printable) - set("\x0b\x0c\r")))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


@pytest.fixture(scope="module")
def ascii_lm():
    tok = ascii_tokenizer()
    return make_tiny_llama(len(tok), seed=1), tok


@pytest.fixture()
def backend(ascii_lm):
    be = LocalBackend(*ascii_lm, json_whitespace=0, seed=3)
    yield be
    be.shutdown()


@sgl.function
def sampled(s, prompt):
    s += prompt
    s += sgl.gen("out", max_tokens=24, temperature=1.0, stop=["."], return_logprob=True, top_logprobs_num=3,
                 return_text_in_logprobs=True)


def test_stream_yields_the_non_streamed_text_with_the_same_seed(ascii_lm):
    outs = []
    for stream in (False, True):
        be = LocalBackend(*ascii_lm, seed=11)
        st = sampled.run(prompt="Q: 2+2=", stream=stream, backend=be)
        chunks = list(st.text_iter("out")) if stream else [st["out"]]
        outs.append(("".join(chunks), st["out"], st.get_meta_info("out"), len(chunks)))
        be.shutdown()
    (plain, _, meta, _), (joined, var, smeta, n_chunks) = outs
    assert plain and joined == plain == var
    assert n_chunks > 2  # really token by token, not one chunk at the end
    assert smeta["output_token_logprobs"] == meta["output_token_logprobs"]
    assert smeta["finish_reason"] == meta["finish_reason"]


def test_async_stream_and_logprobs_in_meta_info(backend, ascii_lm):
    model, tok = ascii_lm
    st = sampled.run(prompt="Q: 7-3=", stream=True, backend=backend)

    async def collect() -> str:
        return "".join([c async for c in st.text_async_iter("out")])

    text = asyncio.run(collect())
    meta = st.get_meta_info("out")
    assert text == st["out"]
    lps = meta["output_token_logprobs"]
    assert len(lps) == meta["completion_tokens"] == len(meta["output_top_logprobs"])
    ids = tok("Q: 7-3=")["input_ids"]
    with torch.no_grad():
        ref = torch.log_softmax(model(torch.tensor([ids + [t for _, t, _ in lps]])).logits[0].float(), -1)
    for j, (lp, tid, piece) in enumerate(lps):  # server layout: (logprob, token id, token text)
        assert piece == tok.decode([tid])
        assert abs(lp - float(ref[len(ids) - 1 + j, tid])) < 1e-4
        assert [t for _, t, _ in meta["output_top_logprobs"][j]] == ref[len(ids) - 1 + j].topk(3).indices.tolist()


@sgl.function
def fork_mixed(s, regex):
    s += "Answer: "
    forks = s.fork(4)
    for i, f in enumerate(forks):
        if i < 2:
            f += sgl.gen("out", max_tokens=16, temperature=1.0, regex=regex)
        else:  # free rows, long enough to be decoding while the constrained ones run
            f += sgl.gen("out", max_tokens=24, temperature=1.0, ignore_eos=True)
    forks.join()
    return [f["out"] for f in forks], [f.get_meta_info("out")["completion_tokens"] for f in forks]


def test_regex_holds_on_every_branch_and_batches_with_free_rows(backend):
    regex = r"(yes|no), [0-9]{2}[a-c]"
    # the fork's four gens reach the backend from four threads; under load (CI) they can arrive further apart
    # than the default 2 ms admission window and the short rows finish before the last joins: widen it here,
    # this test is about constrained and free rows sharing a batch, not about admission timing
    backend.admit_wait_s = 1.0
    st = fork_mixed.run(regex=regex, backend=backend)
    outs, counts = st.ret_value
    assert backend.max_batch_seen == 4  # constrained and free branches decoded in one batch
    for text in outs[:2]:
        assert re.fullmatch(regex, text), text
    assert any(not re.fullmatch(regex, t) for t in outs[2:])  # the free rows really were free
    assert counts[2:] == [24, 24]


@sgl.function
def regex_fork(s, regex):
    s += "Pick: "
    forks = s.fork(6)
    forks += sgl.gen("out", max_tokens=12, temperature=1.0, regex=regex)
    forks.join()
    return [f["out"] for f in forks]


def test_regex_on_all_branches_of_a_fork(backend):
    regex = r"[A-C]{1,3}-[0-9]"
    outs = regex_fork.run(regex=regex, backend=backend).ret_value
    assert len(outs) == 6 and len(set(outs)) > 1  # sampled, yet every branch obeys
    for text in outs:
        assert re.fullmatch(regex, text), text


def test_json_schema_parses_and_validates(backend):
    jsonschema = pytest.importorskip("jsonschema")
    schema = {
        "type": "object",
        "properties": {"name": {"enum": ["ab", "cd"]}, "ok": {"type": "boolean"},
                       "n": {"type": "integer", "minimum": 0, "maximum": 99}},
        "required": ["name", "ok", "n"],
        "additionalProperties": False,
    }

    @sgl.function
    def prog(s):
        s += "Record: "
        s += sgl.gen("rec", max_tokens=48, temperature=1.0, json_schema=json.dumps(schema))
        s += " then"
        s += sgl.gen("after", max_tokens=4, temperature=0.0)  # the branch goes on after the grammar ends
        s.stream_executor.sync()
        branch = backend.branch_view(s.stream_executor, 0)
        return len(branch.logprobs), branch.sampled

    st = prog.run(backend=backend)
    records, sampled = st.ret_value
    assert records == sampled  # the grammar's closing EOS is neither kept nor recorded
    obj = json.loads(st["rec"])
    jsonschema.validate(obj, schema)
    assert st.get_meta_info("rec")["finish_reason"]["type"] == "stop"
    assert st.get_meta_info("after")["completion_tokens"] == 4
    assert backend.usage().reencoded_tokens == 0


def test_dtypes_parse(backend):
    @sgl.function
    def prog(s):
        s += "Hours: " + sgl.gen("i", dtype=int, max_tokens=6)
        s += "\nRate: " + sgl.gen("f", dtype=float, max_tokens=6)
        s += "\nOk: " + sgl.gen("b", dtype=bool, max_tokens=6)
        s += "\nName: " + sgl.gen("s", dtype=str, max_tokens=10)

    st = prog.run(backend=backend)
    assert isinstance(int(st["i"]), int)
    assert isinstance(float(st["f"]), float)
    assert st["b"] in {"True", "False"}
    assert re.fullmatch(r"\"[\w\d\s]*\"", st["s"]) or not st["s"].endswith('"')  # cut by max_tokens at worst
    assert backend.usage().reencoded_tokens == 0


def test_bad_json_schema_is_one_clear_error(backend):
    @sgl.function
    def prog(s):
        s += "x" + sgl.gen("v", json_schema="{not json", max_tokens=4)

    st = prog.run(backend=backend)
    with pytest.raises(KeyError):
        st["v"]
    err = str(st.stream_executor.error())
    assert err.startswith("json_schema: cannot compile") and "\n" not in err
    assert backend.live_branches() == 0


def test_min_tokens_and_stop_token_ids(backend, ascii_lm):
    _, tok = ascii_lm

    @sgl.function
    def greedy(s, stop_ids, min_toks):
        s += "Q: 1+1="
        s += sgl.gen("out", max_tokens=8, temperature=0.0, stop_token_ids=stop_ids, min_tokens=min_toks)
        s.stream_executor.sync()
        branch = backend.branch_view(s.stream_executor, 0)
        return len(branch.logprobs), branch.sampled, len(branch.generated_ids)

    free = greedy.run(None, 0, backend=backend)["out"]
    first = tok.convert_tokens_to_ids(free[0])
    st = greedy.run([first], 0, backend=backend)
    assert st["out"] == ""  # the stop token is trimmed from the text, as the server does
    assert st.get_meta_info("out")["finish_reason"] == {"type": "stop", "matched": first}
    assert st.ret_value == (0, 0, 0)  # the stop token is not kept in the ids, nor in the records
    st = greedy.run([first], 3, backend=backend)
    assert len(tok(st["out"], add_special_tokens=False)["input_ids"]) >= 3
    assert free[0] not in st["out"][:3]  # blocked until min_tokens, not just cut afterwards


def test_batched_sampler_draws_from_each_rows_distribution():
    """The vectorised inverse-CDF sampler: frequencies match softmax(logits / T) per row, top-k and
    top-p cut exactly where the per-row sort did, and greedy rows take the argmax."""
    from types import SimpleNamespace

    from sglang_stop.backends.batching import pick_tokens

    # (temperature, top_k, top_p, min_p)
    settings = [(1.0, -1, 1.0, 0.0), (0.5, 2, 1.0, 0.0), (1.0, -1, 0.7, 0.0), (0.0, -1, 1.0, 0.0), (1.0, -1, 1.0, 0.3)]
    copies = 500  # rows per setting, each with its own generator: 500 x 8 calls = 4000 draws a setting
    rows = [SimpleNamespace(temperature=t, top_k=k, top_p=p, min_p=m,
                            state=SimpleNamespace(generator=torch.Generator().manual_seed(i * copies + c)))
            for i, (t, k, p, m) in enumerate(settings) for c in range(copies)]
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, float("-inf")]]).expand(len(rows), 5)
    draws = torch.tensor([pick_tokens(logits, rows) for _ in range(8)]).view(8, 5, copies).transpose(0, 1)
    freq = torch.stack([torch.bincount(d.flatten(), minlength=5) / d.numel() for d in draws])
    p_plain = torch.softmax(logits[0], -1)
    torch.testing.assert_close(freq[0], p_plain, atol=0.03, rtol=0)
    torch.testing.assert_close(freq[1, :2], torch.softmax(logits[0, :2] / 0.5, -1), atol=0.03, rtol=0)
    assert freq[1, 2:].sum() == 0
    # top_p 0.7: cum probs 0.64, 0.88, ... -> the first two tokens, renormalised
    torch.testing.assert_close(freq[2, :2], p_plain[:2] / p_plain[:2].sum(), atol=0.03, rtol=0)
    assert freq[2, 2:].sum() == 0
    assert (draws[3] == 0).all()
    # min_p 0.3: the floor is 0.3 x 0.64 = 0.19 -> again the first two tokens (0.64, 0.24)
    torch.testing.assert_close(freq[4, :2], p_plain[:2] / p_plain[:2].sum(), atol=0.03, rtol=0)
    assert freq[4, 2:].sum() == 0
    assert (draws[:3] != 4).all()  # a token of probability 0 is never drawn


def test_stop_regex_cuts_where_the_free_text_matches(backend):
    @sgl.function
    def greedy(s, rx):
        s += "Q: 3+4="
        s += sgl.gen("out", max_tokens=12, temperature=0.0, stop_regex=rx)

    free = greedy.run(None, backend=backend)["out"]
    c = free[4]
    st = greedy.run(re.escape(c), backend=backend)
    assert st["out"] == free[: free.index(c)]
    assert st.get_meta_info("out")["finish_reason"] == {"type": "stop", "matched": c}


def test_select_choices_methods_see_the_models_logprobs(backend, ascii_lm):
    from sglang.lang.choices import greedy_token_selection, unconditional_likelihood_normalized

    model, tok = ascii_lm
    choices = ["yes", "no", "maybe"]
    prompt = "Q: ok? A: "

    def ref(text: str, choice: str, first_none: bool) -> list:
        ids = tok(text, add_special_tokens=not first_none)["input_ids"] if text else []
        cids = tok(choice, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([ids + cids])).logits[0].float(), -1)
        out = [float(lp[len(ids) - 1 + j, t]) for j, t in enumerate(cids)] if ids else \
            [None] + [float(lp[j - 1, cids[j]]) for j in range(1, len(cids))]
        return out

    for method in (None, greedy_token_selection, unconditional_likelihood_normalized):
        @sgl.function
        def prog(s):
            s += prompt + sgl.select("c", choices=choices, choices_method=method)

        st = prog.run(backend=backend)
        meta = st.get_meta_info("c")
        for c, got in zip(choices, meta["input_token_logprobs"]):
            assert [e[0] for e in got] == pytest.approx(ref(prompt, c, False), abs=1e-4)
            assert "".join(e[2] for e in got) == c
        if method is unconditional_likelihood_normalized:
            for c, got in zip(choices, meta["unconditional_token_logprobs"]):
                assert [e[0] for e in got] == pytest.approx(ref("", c, True), abs=1e-4)
        if method is None:
            norm = meta["normalized_prompt_logprobs"]
            assert st["c"] == choices[max(range(3), key=norm.__getitem__)]
        assert st.text() == prompt + st["c"]


@pytest.mark.slow
def test_constraints_on_the_embedded_bpe_model():
    """The same constraints through xgrammar's byte-level BPE path (SmolLM2's 49k vocabulary); the
    fast tests above cover the raw-vocabulary path and the acceptance."""
    from sglang_stop.models import load_model

    be = LocalBackend(*load_model(None, device="cpu"), seed=0)

    @sgl.function
    def prog(s):
        s += "The answer to 6 times 7 is " + sgl.gen("n", dtype=int, max_tokens=8)
        s += "\nA JSON object: " + sgl.gen("obj", max_tokens=40, json_schema=json.dumps(
            {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}))
        s += "\nA word: " + sgl.gen("w", regex=r"[a-z]{2,8}", max_tokens=8)

    try:
        st = prog.run(backend=be)
        assert isinstance(int(st["n"]), int)
        assert isinstance(json.loads(st["obj"])["ok"], bool)
        assert re.fullmatch(r"[a-z]{2,8}", st["w"])
        assert be.usage().reencoded_tokens == 0
    finally:
        be.shutdown()


def test_penalties_and_n(backend, ascii_lm):
    _, tok = ascii_lm

    @sgl.function
    def greedy(s, freq, pres, n):
        s += "Q: 5+5="
        s += sgl.gen("out", max_tokens=12, temperature=0.0, frequency_penalty=freq, presence_penalty=pres, n=n)

    free = tok(greedy.run(0.0, 0.0, 1, backend=backend)["out"], add_special_tokens=False)["input_ids"]
    assert len(set(free)) < len(free)  # unpenalised, this model repeats itself
    for freq, pres in ((50.0, 0.0), (0.0, 50.0)):
        ids = tok(greedy.run(freq, pres, 1, backend=backend)["out"], add_special_tokens=False)["input_ids"]
        assert len(ids) >= 10 and len(set(ids)) == len(ids)  # a repeated token costs more than any gap
    st = greedy.run(0.0, 0.0, 2, backend=backend)
    assert str(st.stream_executor.error()).startswith("n: 2 completions")


def test_unsynced_run_runs_its_gen_then_releases_the_branch(backend):
    """``prog.run()`` returns while its gen is still queued; SGLang ends the program at once. The
    gen must still run (it failed with 'branch already ended') and the branch be released after."""
    import time

    st = sampled.run(prompt="Q: 1+8=", backend=backend)
    assert st["out"] and st.stream_executor.error() is None
    deadline = time.monotonic() + 10
    while backend.live_branches() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert backend.live_branches() == 0
