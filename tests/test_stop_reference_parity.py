"""The server suite checks /stop/score against tests/server/tiny.py's torch reference; this pins that
reference to the in-process `stop` scorer (StopNet loaded from the same checkpoint), so server scores
equal in-process scores within the server tests' 1e-4."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent / "server"))
import tiny  # noqa: E402

from sglang_stop.models import load_model  # noqa: E402
from sglang_stop.scorers.stop import load_checkpoint  # noqa: E402


def test_server_reference_equals_in_process_stop_scorer(tmp_path):
    model_dir = tiny.make_model(tmp_path / "model")
    ckpt = tiny.make_stop_checkpoint(model_dir, tmp_path / "ckpt")
    reference = tiny.ReferenceScorer(model_dir, ckpt)
    model, _ = load_model(str(model_dir))
    net = load_checkpoint(ckpt, model)
    prefixes = [[5, 9, 12, 7, 33, 2, 8, 19, 4], [11, 3, 8, 22, 6, 9, 15], [40, 41]]
    with torch.no_grad():
        ours = torch.softmax(net.logits_from_ids(model, prefixes), -1)[:, 1].tolist()
    for ids, p in zip(prefixes, ours):
        assert abs(p - reference.score(ids)) <= 1e-5
