"""Battery rows: training (label, train) and STOP checkpoints given to `run` (checked by prepare(), before decoding)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from tests.battery import TESTBED_STOP, Case

LABEL = ["sglang-stop", "label", "--problems", "2", "--out", "{tmp}/labels.jsonl"]
TRAIN = ["sglang-stop", "train", "--epochs", "1"]
VTRAIN = ["sglang-stop", "train-verifier", "--epochs", "1"]
RUN_STOP = ["sglang-stop", "run", "--model", "{testbed}", "--task", "testbed", "--scorer", "stop", "--problems", "1",
            "--config", "{cfg}"]


def _labels_file(header_settings: dict | None = None, model: dict | None = None, header: bool = True,
                 problems: int = 2) -> Callable[[Path], dict[str, str]]:
    """Writes ``{tmp}/labels.jsonl``: a header (the label command's defaults, ``header_settings`` over them)
    and ``problems`` x 2 records."""

    def setup(tmp: Path) -> dict[str, str]:
        from sglang_stop.training.labels import LabelJob, LabelRecord, label_header

        defaults = dict(prefixes=8, continuations=16, prefix_len=16, max_new_tokens=64)
        h = label_header(LabelJob(**defaults), model or {"name": "testbed", "weights_hash": "0" * 16},
                         task="testbed", split="label", problems_jsonl=None)
        h.settings.update(header_settings or {})
        lines = [json.dumps({"header": h.model_dump(mode="json")})] if header else []
        for p in range(problems):
            for i in range(2):
                lines.append(LabelRecord(problem_id=f"p{p}", question="Q1+2=", answer="3", prefix_idx=i,
                                         token_ids=[1, 2, 3], prompt_len=1, prefix_len=2, prefix_text="1+", s_mc=0.5,
                                         K=2, cont_lengths=[4, 4], cont_answers=["3", None], seed=0).model_dump_json())
        (tmp / "labels.jsonl").write_text("\n".join(lines) + "\n")
        return {}

    return setup


def _write(name: str, text: str) -> Callable[[Path], dict[str, str]]:
    def setup(tmp: Path) -> dict[str, str]:
        (tmp / name).write_text(text)
        return {}

    return setup


def _stop_config(damage: Callable[[Path], None] | None) -> Callable[[Path], dict[str, str]]:
    """A copy of the committed testbed checkpoint, damaged, named by a run config (``{cfg}``)."""

    def setup(tmp: Path) -> dict[str, str]:
        ck = tmp / "ckpt"
        shutil.copytree(TESTBED_STOP, ck)
        if damage is not None:
            damage(ck)
        cfg = tmp / "run.yaml"
        cfg.write_text(f"sampling:\n  max_new_tokens: 64\nscorer:\n  name: stop\n  options:\n    checkpoint: {ck}\n")
        return {"cfg": str(cfg)}

    return setup


def _head_for_hidden(n: int) -> Callable[[Path], None]:
    def damage(ck: Path) -> None:
        import torch

        torch.save(torch.nn.Linear(n, 2).state_dict(), ck / "classifier_head.pth")

    return damage


def _truncate(name: str) -> Callable[[Path], None]:
    def damage(ck: Path) -> None:
        raw = (ck / name).read_bytes()
        (ck / name).write_bytes(raw[: len(raw) // 3])

    return damage


def _garbage(name: str) -> Callable[[Path], None]:
    return lambda ck: (ck / name).write_bytes(b"\x00garbage\xff" * 16)


def _other_weights(ck: Path) -> None:
    f = ck / "assess_token_config.json"
    meta = json.loads(f.read_text())
    meta["base_model"]["weights_hash"] = "0123456789abcdef"
    f.write_text(json.dumps(meta))


def _empty(ck: Path) -> None:
    shutil.rmtree(ck)
    ck.mkdir()


ROWS: list[Case] = [
    # label: flags, before the model loads
    Case("label-P-zero", [*LABEL, "-P", "0"], 2, "'-P' / '--prefixes': 0 is not in the range"),
    Case("label-K-zero", [*LABEL, "-K", "0"], 2, "'-K' / '--continuations': 0 is not in the range"),
    Case("label-K-negative", [*LABEL, "-K", "-4"], 2, "'-K' / '--continuations': -4 is not in the range"),
    Case("label-prefix-len-negative", [*LABEL, "--prefix-len", "-1"], 2, "'--prefix-len': -1 is not in the range"),
    Case("label-problems-zero", [*LABEL, "--problems", "0"], 2, "'--problems': 0 is not in the range"),
    Case("label-split-nope", [*LABEL, "--split", "nope"], 2, "'--split': 'nope' is not one of 'label', 'eval'"),
    Case("label-prefix-len-ge-max-new-tokens", [*LABEL, "--prefix-len", "64", "--max-new-tokens", "64"], 2,
         "--prefix-len 64 must be below --max-new-tokens 64"),
    Case("label-temperature-negative", [*LABEL, "--temperature", "-0.5"], 2, "'--temperature': -0.5 is not in the range"),
    Case("label-top-p-zero", [*LABEL, "--top-p", "0"], 2, "'--top-p': 0.0 is not in the range"),
    Case("label-top-k-zero", [*LABEL, "--top-k", "0"], 2, "--top-k: 0 keeps no token"),
    Case("label-out-is-dir", ["sglang-stop", "label", "--problems", "2", "--out", "{tmp}"], 2, "is a directory"),
    Case("label-problems-jsonl-bad-line", [*LABEL, "--problems-jsonl", "{tmp}/p.jsonl"], 2, "p.jsonl:2: invalid JSON",
         setup=_write("p.jsonl", '{"id": 1, "question": "Q1+2=", "answer": "3"}\n{oops\n')),
    # label: resuming onto a file made with other settings / another model / no header
    Case("label-resume-other-K", [*LABEL, "-K", "4"], 2,
         "recorded with continuations=16, this run has continuations=4", setup=_labels_file()),
    Case("label-resume-other-prefix-len", [*LABEL, "--prefix-len", "8"], 2,
         "recorded with prefix_len=16, this run has prefix_len=8", setup=_labels_file()),
    Case("label-resume-other-temperature", [*LABEL, "--temperature", "0.7"], 2,
         "recorded with temperature=1.0, this run has temperature=0.7", setup=_labels_file()),
    Case("label-resume-other-model", LABEL, 2, "recorded with model", setup=_labels_file()),
    Case("label-resume-headerless", LABEL, 2, "has no header record", setup=_labels_file(header=False)),
    # train
    Case("train-labels-missing", [*TRAIN, "--labels", "{tmp}/nope.jsonl", "--out", "{tmp}/ck"], 2,
         "nope.jsonl: file not found"),
    Case("train-epochs-zero", [*TRAIN, "--epochs", "0", "--labels", "{tmp}/l.jsonl", "--out", "{tmp}/ck"], 2,
         "'--epochs': 0 is not in the range"),
    Case("train-val-fraction-one", [*TRAIN, "--val-fraction", "1", "--labels", "{tmp}/l.jsonl", "--out", "{tmp}/ck"],
         2, "'--val-fraction': 1.0 is not in the range"),
    Case("train-labels-garbage", [*TRAIN, "--labels", "{tmp}/l.jsonl", "--out", "{tmp}/ck"], 2,
         "l.jsonl:1: invalid JSON", setup=_write("l.jsonl", "not json\n")),
    Case("train-labels-one-problem", [*TRAIN, "--labels", "{tmp}/labels.jsonl", "--out", "{tmp}/ck"], 2,
         "need both", setup=_labels_file(problems=1)),
    Case("train-verifier-labels-garbage", [*VTRAIN, "--labels", "{tmp}/l.jsonl", "--out", "{tmp}/v"], 2,
         "l.jsonl:1: invalid JSON", setup=_write("l.jsonl", "not json\n")),
    Case("train-verifier-one-problem", [*VTRAIN, "--labels", "{tmp}/labels.jsonl", "--out", "{tmp}/v"], 2,
         "need both", setup=_labels_file(problems=1)),
    Case("train-verifier-bad-base", [*VTRAIN, "--labels", "{tmp}/labels.jsonl", "--base", "{tmp}/nope", "--out",
                                     "{tmp}/v"], 2, "--base: ", setup=_labels_file()),
    Case("train-out-is-file", [*TRAIN, "--labels", "{tmp}/labels.jsonl", "--out", "{tmp}/labels.jsonl"], 2,
         "exists and is not a directory", setup=_labels_file()),
    Case("train-out-not-a-checkpoint", [*TRAIN, "--labels", "{tmp}/labels.jsonl", "--out", "{tmp}"], 2,
         "not a STOP checkpoint", setup=_labels_file()),
    Case("train-labels-other-model", [*TRAIN, "--labels", "{tmp}/labels.jsonl", "--out", "{tmp}/ck"], 2,
         "labelled on model", setup=_labels_file(problems=12)),
    # run --scorer stop: the checkpoint is checked by prepare(), before any decode
    Case("stop-no-checkpoint", ["sglang-stop", "run", "--model", "{testbed}", "--task", "testbed", "--scorer", "stop",
                                "--problems", "2", "--max-new-tokens", "64"], 2, "scorer.options.checkpoint"),
    Case("stop-checkpoint-missing-dir", RUN_STOP, 2, "not a directory", setup=_stop_config(shutil.rmtree)),
    Case("stop-checkpoint-empty-dir", RUN_STOP, 2, "empty directory", setup=_stop_config(_empty)),
    Case("stop-checkpoint-head-garbage", RUN_STOP, 2, "classifier_head.pth: not a readable torch file",
         setup=_stop_config(_garbage("classifier_head.pth"))),
    Case("stop-checkpoint-embedding-truncated", RUN_STOP, 2, "assess_token_embedding.pth: not a readable torch file",
         setup=_stop_config(_truncate("assess_token_embedding.pth"))),
    Case("stop-checkpoint-adapter-truncated", RUN_STOP, 2, "adapter_model.safetensors: not a readable safetensors",
         setup=_stop_config(_truncate("adapter/classifier/adapter_model.safetensors"))),
    Case("stop-checkpoint-hidden-size", RUN_STOP, 2, "expected (2, 128)", setup=_stop_config(_head_for_hidden(64))),
    Case("stop-checkpoint-other-base", RUN_STOP, 2, "same shapes, other weights", setup=_stop_config(_other_weights)),
    Case("stop-checkpoint-config-garbage", RUN_STOP, 2, "assess_token_config.json",
         setup=_stop_config(_garbage("assess_token_config.json"))),
]
