from __future__ import annotations
def majority_vote(answers, weights=None):
    c = {}
    for i, a in enumerate(answers):
        if a is None: continue
        c[a] = c.get(a, 0.0) + (1.0 if weights is None else weights[i])
    return max(c, key=c.get) if c else None
