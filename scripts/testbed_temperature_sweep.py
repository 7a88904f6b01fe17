"""Per-sample accuracy and oracle pass rate at prune points vs temperature, for a testbed model.

Usage: PYTHONPATH=. python scripts/testbed_temperature_sweep.py MODEL_DIR T1,T2 [L1,L2]
"""
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from sglang_stop.testbed.data import make_problems, extract_answer, check_steps
from sglang_stop.training.hf_sampler import HFSampler, SampleParams
torch.set_num_threads(1)
d = sys.argv[1]; temps = [float(x) for x in sys.argv[2].split(",")]
tok = AutoTokenizer.from_pretrained(d); m = AutoModelForCausalLM.from_pretrained(d).eval()
ps = make_problems(100, seed=77); S = 8
sam = HFSampler(m, tok.eos_token_id, tok.pad_token_id, 512)
for T in temps:
    prompts = [tok(p["question"])["input_ids"] for p in ps for _ in range(S)]
    gens = sam(prompts, SampleParams(temperature=T, max_new_tokens=64), 5)
    txt = [tok.decode(g, skip_special_tokens=True) for g in gens]
    ok = [extract_answer(t) == p["answer"] for t, p in zip(txt, [p for p in ps for _ in range(S)])]
    for L in [int(x) for x in (sys.argv[3] if len(sys.argv) > 3 else "14,16").split(",")]:
        pre = [tok.decode(g[:L], skip_special_tokens=True) for g in gens]
        chk = [check_steps(p["question"] + x) for x, p in zip(pre, [p for p in ps for _ in range(S)])]
        a1 = sum(o for o, c in zip(ok, chk) if c) / max(1, sum(chk)); a0 = sum(o for o, c in zip(ok, chk) if not c) / max(1, len(chk) - sum(chk))
        print(f"T={T} L={L} acc={sum(ok)/len(ok):.3f} oracle_pass={sum(chk)/len(chk):.3f} acc|pass={a1:.3f} acc|fail={a0:.3f}", flush=True)
