"""Does a testbed model know when its own chain went wrong? (label-free check before any STOP labelling)

Samples held-out problems at T=1 and reports how often the model abstains (a bare ``A``, no answer) on
paths whose steps are wrong vs right. A model that abstains on its own slips carries "I slipped" in its
state up to the end, which is what the [STOP] tokens can read from the KV cache.

Usage: PYTHONPATH=. python scripts/testbed_abstain_check.py MODEL_DIR [T] [PROBLEMS]
"""
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from sglang_stop.testbed.data import make_problems, extract_answer, check_steps
from sglang_stop.training.hf_sampler import HFSampler, SampleParams
torch.set_num_threads(1)
d = sys.argv[1]; T = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
n = int(sys.argv[3]) if len(sys.argv) > 3 else 100
tok = AutoTokenizer.from_pretrained(d); m = AutoModelForCausalLM.from_pretrained(d).eval()
ps = make_problems(n, seed=77); S = 8
gens = HFSampler(m, tok.eos_token_id, tok.pad_token_id, 512)(
    [tok(p["question"])["input_ids"] for p in ps for _ in range(S)], SampleParams(temperature=T, max_new_tokens=64), 5)
rows = []
for g, p in zip(gens, [p for p in ps for _ in range(S)]):
    t = tok.decode(g, skip_special_tokens=True)
    body = t.split("A")[0]
    slipped = not check_steps(p["question"] + body)
    abstained = t.endswith("A") or ("A" in t and extract_answer(t) is None)
    rows.append((slipped, abstained, extract_answer(t) == p["answer"]))
sl = [r for r in rows if r[0]]; cl = [r for r in rows if not r[0]]
print(f"T={T} paths={len(rows)} acc={sum(r[2] for r in rows)/len(rows):.3f} slipped={len(sl)/len(rows):.3f} "
      f"abstain|slipped={sum(r[1] for r in sl)/max(1,len(sl)):.3f} abstain|clean={sum(r[1] for r in cl)/max(1,len(cl)):.3f}")
