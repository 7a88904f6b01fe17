"""The Python half of scripts/gpu_smoke.sh: what a GPU user runs to check the SGLang plugin on real CUDA paths.

``prepare MODEL WORK``: a random STOP checkpoint for MODEL (authors' layout, nonzero LoRA so a misapplied
adapter shows), two converted adapters on different reserved ids, test prefixes, and the PEFT reference
scores in bf16 on the GPU (written to WORK/smoke.json; the process exits, freeing the GPU for the server).

``check URL WORK``: against the server launched by gpu_smoke.sh with WORK/adapter as ``stop``:
scores vs the reference, ``cached_tokens``, [STOP] never sampled on CUDA-graph replays (decode batches
<= --cuda-graph-max-bs) and eager batches (prefill; a decode batch above it), also for an adapter loaded
after start-up, base outputs unchanged while STOP scoring runs beside them, and scoring latency for 64
prefixes of 1024 tokens. Prints one line per check and a JSON summary; exit 1 if any check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

K = 4
RANDOM_LENGTHS = (17, 130, 511, 1000)  # random-id prefixes beside the text ones
RANK = 8
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
GRAPH_MAX_BS = int(os.environ.get("SMOKE_CUDA_GRAPH_MAX_BS", "8"))  # gpu_smoke.sh passes the same value
SCORE_TOL = float(os.environ.get("SMOKE_SCORE_TOL", "0.03"))  # |p_server - p_peft| in bf16
BASE_TOL = float(os.environ.get("SMOKE_BASE_TOL", "0.25"))  # nats: a misapplied random LoRA moves far more
TEXTS = [
    "Solve step by step: a train travels 120 km in 2 hours. What is its average speed?",
    "Let x + 3 = 10. Then x = 7. Check: 7 + 3 = 10. The answer is 7.",
    "Compute 17 * 23. First 17 * 20 = 340, then 17 * 3 = 51, so 340 + 51 = 391.",
    "The derivative of x^3 is 3x^2, so at x = 2 the slope is 12.",
]


def prepare(model_dir: Path, work: Path) -> None:
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sglang_stop.srt.convert import convert_checkpoint

    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(model_dir)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    cfg = base.config.get_text_config()
    hidden, vocab = int(cfg.hidden_size), int(cfg.vocab_size)
    if len(tok) >= vocab - 1:
        raise SystemExit(f"{model_dir}: needs two padded embedding rows (tokenizer {len(tok)}, vocab {vocab})")
    ckpt = work / "ckpt"
    lcfg = LoraConfig(r=RANK, lora_alpha=2 * RANK, target_modules=TARGETS, init_lora_weights=False,
                      lora_dropout=0.0, task_type="CAUSAL_LM")
    peft_model = get_peft_model(base, lcfg, adapter_name="classifier")
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.mul_(0.05)  # visible on the hidden states, not a wrecked model
    ckpt.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(ckpt / "adapter", selected_adapters=["classifier"])
    emb = base.get_input_embeddings().weight.detach()
    vec = emb.mean(0) + emb.std() * torch.randn(hidden)
    head = torch.nn.Linear(hidden, 2)
    torch.nn.init.normal_(head.weight, std=0.02)
    torch.save(head.state_dict(), ckpt / "classifier_head.pth")
    torch.save({"assess_token": "[STOP]", "special_token_id": -1, "input_embedding": vec, "output_embedding": None},
               ckpt / "assess_token_embedding.pth")
    (ckpt / "assess_token_config.json").write_text(json.dumps({"num_assess_tokens": K}))
    del peft_model, base
    a1 = convert_checkpoint(ckpt, model_dir, work / "adapter", check_weights=False)
    a2 = convert_checkpoint(ckpt, model_dir, work / "adapter2", stop_token_id=vocab - 2, check_weights=False)

    rng = random.Random(0)
    prefixes = [tok(t)["input_ids"] for t in TEXTS]
    prefixes += [[rng.randrange(len(tok)) for _ in range(n)] for n in RANDOM_LENGTHS]
    reference = reference_scores(model_dir, ckpt, prefixes)
    (work / "smoke.json").write_text(json.dumps({
        "prefixes": prefixes, "reference": reference, "stop_id": a1.stop_token_id, "stop_id2": a2.stop_token_id,
        "tokenizer_size": len(tok), "adapter2": str(work / "adapter2"),
    }))
    print(f"prepared {work}: stop ids {a1.stop_token_id}, {a2.stop_token_id}; "
          f"reference {[round(r, 4) for r in reference]}")


def reference_scores(model_dir: Path, ckpt: Path, prefixes: list[list[int]]) -> list[float]:
    """STOP's two stages with PEFT in bf16 on the GPU: base prefix KV, then k [STOP] vectors with the LoRA."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    dev = os.environ.get("SMOKE_DEVICE", "cuda")  # cpu + float32: the CPU test of this script
    dtype = getattr(torch, os.environ.get("SMOKE_DTYPE", "bfloat16"))
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(dev)
    model = PeftModel.from_pretrained(base, ckpt / "adapter" / "classifier").eval()
    vec = torch.load(ckpt / "assess_token_embedding.pth", weights_only=True)["input_embedding"]
    vec = vec.to(dev, dtype)
    head = torch.nn.Linear(vec.numel(), 2)
    head.load_state_dict(torch.load(ckpt / "classifier_head.pth", weights_only=True))
    head = head.to(dev).float()
    out = []
    with torch.no_grad():
        for ids in prefixes:
            x = torch.tensor([ids], device=dev)
            with model.disable_adapter():
                past = model(input_ids=x, use_cache=True).past_key_values
            pos = torch.arange(len(ids), len(ids) + K, device=dev).unsqueeze(0)
            h = model(inputs_embeds=vec.view(1, 1, -1).expand(1, K, -1), past_key_values=past, position_ids=pos,
                      output_hidden_states=True).hidden_states[-1][0, -1]
            out.append(float(torch.softmax(head(h.float()), -1)[1]))
    del model, base
    torch.cuda.empty_cache()
    return out


class Checker:
    def __init__(self, url: str, work: Path) -> None:
        import requests

        self.requests = requests
        self.url = url.rstrip("/")
        self.data: dict[str, Any] = json.loads((work / "smoke.json").read_text())
        self.results: dict[str, Any] = {}
        self.failed: list[str] = []

    def post(self, path: str, body: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
        r = self.requests.post(self.url + path, json=body, timeout=timeout)
        if r.status_code != 200:
            raise RuntimeError(f"POST {path}: HTTP {r.status_code}: {r.text[:300]}")
        return r.json()

    def verdict(self, name: str, ok: bool, detail: Any) -> None:
        self.results[name] = {"ok": ok, "detail": detail}
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
        if not ok:
            self.failed.append(name)

    def generate(self, prompts: list[list[int]], n: int, **sp: Any) -> list[dict[str, Any]]:
        """One batched /generate: the server runs the prompts as one batch (prefill eager, decode graphed
        while the batch fits --cuda-graph-max-bs)."""
        body = {"input_ids": prompts, "sampling_params": {"max_new_tokens": n, "ignore_eos": True, **sp}}
        return self.post("/generate", body)  # type: ignore[return-value]

    def base_logprobs(self, prompts: list[list[int]]) -> list[tuple[list[int], list[float]]]:
        outs = self.post("/generate", {"input_ids": prompts, "return_logprob": True,
                                       "sampling_params": {"max_new_tokens": 16, "temperature": 0.0,
                                                           "ignore_eos": True}})
        return [(o["output_ids"], [t[0] for t in o["meta_info"]["output_token_logprobs"]]) for o in outs]

    def run(self) -> int:
        prompts = [p[:64] for p in self.data["prefixes"]]
        baseline = self.base_logprobs(prompts)  # before any STOP request touched the server
        for name, check in [("scores", self.check_scores), ("masking", lambda: self.check_masking(prompts)),
                            ("base", lambda: self.check_base_unchanged(prompts, baseline)),
                            ("latency", self.check_latency)]:
            try:
                check()
            except Exception as e:  # noqa: BLE001 - a failed request is a failed check, reported, not a crash
                self.verdict(f"{name}_error", False, f"{type(e).__name__}: {e}")
        print(json.dumps({"failed": self.failed, "results": self.results}))
        return 1 if self.failed else 0

    def check_scores(self) -> None:
        d = self.data
        got = self.post("/stop/score", {"input_ids": d["prefixes"]})
        diffs = [abs(a - b) for a, b in zip(got["scores"], d["reference"])]
        self.verdict("scores_vs_peft_bf16", max(diffs) <= SCORE_TOL,
                     {"max_abs_diff": max(diffs), "tol": SCORE_TOL, "server": got["scores"], "peft": d["reference"]})
        want = [len(p) for p in d["prefixes"]]
        self.verdict("cached_tokens", got["cached_tokens"] == want, {"got": got["cached_tokens"], "want": want})

    def check_masking(self, prompts: list[list[int]]) -> None:
        d = self.data
        self.check_never_sampled("stop", d["stop_id"], prompts)
        r = self.requests.post(self.url + "/load_lora_adapter",
                               json={"lora_name": "stop2", "lora_path": d["adapter2"]}, timeout=600)
        self.verdict("load_adapter_after_startup", r.status_code == 200, r.text[:200])
        if r.status_code == 200:
            self.check_never_sampled("stop2", d["stop_id2"], prompts)
            got2 = self.post("/stop/score", {"input_ids": d["prefixes"], "adapter": "stop2"})
            diff2 = max(abs(a - b) for a, b in zip(got2["scores"], d["reference"]))
            self.verdict("scores_adapter_loaded_later", diff2 <= SCORE_TOL, {"max_abs_diff": diff2})

    def check_never_sampled(self, name: str, sid: int, prompts: list[list[int]]) -> None:
        bias = {str(sid): 1e4}
        control_id = 100 if 100 != sid else 101
        ctrl = self.generate(prompts[:1], 8, temperature=0.0, logit_bias={str(control_id): 1e4})
        ctrl_ok = all(t == control_id for t in ctrl[0]["output_ids"])  # the bias works: the check can fail
        seen = {}
        for label, batch, sp in [
            ("graph_bs1_greedy", prompts[:1], {"temperature": 0.0}),
            ("graph_bs4_sampled", (prompts * 2)[:4], {"temperature": 1.0}),
            (f"graph_bs{GRAPH_MAX_BS}_sampled", (prompts * GRAPH_MAX_BS)[:GRAPH_MAX_BS], {"temperature": 1.0}),
            ("eager_bs32_sampled", (prompts * 32)[:32], {"temperature": 1.0}),  # above --cuda-graph-max-bs
        ]:
            outs = self.generate(batch, 24, logit_bias=bias, **sp)
            seen[label] = sum(o["output_ids"].count(sid) for o in outs)
        self.verdict(f"{name}_never_sampled", ctrl_ok and not any(seen.values()),
                     {"stop_id": sid, "logit_bias_control_works": ctrl_ok, "stop_tokens_sampled": seen})

    def check_base_unchanged(self, prompts: list[list[int]], baseline: list[tuple[list[int], list[float]]]) -> None:
        stop = threading.Event()

        def flood() -> None:
            while not stop.is_set():
                self.post("/stop/score", {"input_ids": self.data["prefixes"][:4]})

        with ThreadPoolExecutor(2) as ex:
            futs = [ex.submit(flood) for _ in range(2)]
            time.sleep(0.5)
            try:
                mixed = [self.base_logprobs(prompts) for _ in range(3)]
            finally:
                stop.set()
            for f in futs:
                f.result()
        worst, same_ids = 0.0, 0
        for run in mixed:
            for (ids0, lp0), (ids1, lp1) in zip(baseline, run):
                same_ids += ids0 == ids1
                n = next((i for i, (a, b) in enumerate(zip(ids0, ids1)) if a != b), len(ids0))
                worst = max([worst] + [abs(a - b) for a, b in zip(lp0[: n + 1], lp1[: n + 1])])
        self.verdict("base_unchanged_beside_stop_scoring", worst <= BASE_TOL,
                     {"max_logprob_diff_nats": worst, "tol": BASE_TOL,
                      "identical_greedy_outputs": f"{same_ids}/{len(mixed) * len(prompts)}"})

    def check_latency(self) -> None:
        rng = random.Random(1)
        size = int(self.data["tokenizer_size"])
        prefixes = [[rng.randrange(size) for _ in range(1024)] for _ in range(64)]
        t = time.perf_counter()
        cold = self.post("/stop/score", {"input_ids": prefixes})
        t_cold = time.perf_counter() - t
        t = time.perf_counter()
        warm = self.post("/stop/score", {"input_ids": prefixes})
        t_warm = time.perf_counter() - t
        ok = cold["cached_tokens"] == [1024] * 64 and warm["cached_tokens"] == [1024] * 64
        self.verdict("latency_64x1k", ok, {"cold_commit_and_score_s": round(t_cold, 3),
                                           "warm_score_only_s": round(t_warm, 3),
                                           "cached_tokens_all_1024": ok})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="gpu_smoke.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("model", type=Path)
    p.add_argument("work", type=Path)
    c = sub.add_parser("check")
    c.add_argument("url")
    c.add_argument("work", type=Path)
    a = ap.parse_args(argv)
    if a.cmd == "prepare":
        prepare(a.model, a.work)
        return 0
    return Checker(a.url, a.work).run()


if __name__ == "__main__":
    sys.exit(main())
