"""Is "a slip happened" readable from the base's hidden states? Logistic probes on pooled states -> oracle verdict.

Usage: PYTHONPATH=. python scripts/testbed_pooled_probes.py MODEL_DIR LABELS.jsonl  (testbed label records)
"""
import json, sys, torch, random
from transformers import AutoModelForCausalLM
from sglang_stop.testbed.data import check_steps
torch.set_num_threads(1); torch.manual_seed(0)
m = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
rs = [json.loads(l) for l in open(sys.argv[2])]
random.Random(0).shuffle(rs); rs = rs[:3000]
y = torch.tensor([float(check_steps(r["question"] + r["prefix_text"])) for r in rs])
feats = {}
with torch.no_grad():
    for r in rs:
        out = m(input_ids=torch.tensor([r["token_ids"]]), output_hidden_states=True)
        hs = out.hidden_states  # emb + 4 layers
        P = r["prompt_len"]
        for li, h in enumerate(hs):
            g = h[0, P:]
            feats.setdefault(f"mean{li}", []).append(g.mean(0))
            feats.setdefault(f"last{li}", []).append(g[-1])
        lp = torch.log_softmax(out.logits[0, P-1:-1].float(), -1)
        ch = lp[torch.arange(len(r["token_ids"]) - P), torch.tensor(r["token_ids"][P:])]
        feats.setdefault("minlogp", []).append(torch.tensor([ch.min(), ch.mean()]))
n = len(rs); tr = int(0.7 * n)
def auc(s, t):
    pos = s[t == 1]; neg = s[t == 0]
    return ((pos[:, None] > neg[None]).float().mean() + 0.5 * (pos[:, None] == neg[None]).float().mean()).item()
for k, v in feats.items():
    X = torch.stack(v).float(); X = (X - X[:tr].mean(0)) / (X[:tr].std(0) + 1e-6)
    w = torch.zeros(X.shape[1], requires_grad=True); b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200)
    def clo():
        opt.zero_grad(); l = torch.nn.functional.binary_cross_entropy_with_logits(X[:tr] @ w + b, y[:tr]) + 1e-3 * (w ** 2).sum(); l.backward(); return l
    opt.step(clo)
    with torch.no_grad():
        print(k, "test AUC vs oracle %.3f" % auc(X[tr:] @ w + b, y[tr:]), flush=True)
