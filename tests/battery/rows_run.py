"""Battery rows: `sglang-stop run`, `bench` and the main CLI's own options (issues 12 and 17): every
case is refused before the model decodes (most before it loads), in one line, exit 2; signals stop a
run within 2 s, keep every finished problem and exit 130 / 143."""

from __future__ import annotations

from pathlib import Path

from tests.battery import Case

TB = ["--model", "{testbed}", "--task", "testbed"]
RUN = ["sglang-stop", "run", *TB, "--problems", "2", "--n", "4", "--prefix-len", "8", "--keep", "2",
       "--max-new-tokens", "48"]
LONG = ["sglang-stop", "run", *TB, "--problems", "400", "--n", "8", "--prefix-len", "8", "--keep", "2",
        "--max-new-tokens", "64", "--out", "{tmp}/out.jsonl"]


def _file(name: str, text: str):
    def setup(tmp: Path) -> dict[str, str]:
        (tmp / name).write_text(text)
        return {}

    return setup


def _truncated_model(tmp: Path) -> dict[str, str]:
    import shutil

    from tests.battery import TESTBED

    d = tmp / "model"
    shutil.copytree(TESTBED, d)
    data = (TESTBED / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 3])
    return {"model": str(d)}


ROWS: list[Case] = [
    Case("run-truncated-model-weights", ["sglang-stop", "run", "--model", "{model}", "--task", "testbed",
                                         "--problems", "1"], 2, "cannot load (SafetensorError)", setup=_truncated_model),
    Case("run-out-is-a-directory", [*RUN, "--out", "{tmp}"], 2, "is a directory"),
    Case("run-out-exists-without-resume", [*RUN, "--out", "{tmp}/r.jsonl"], 2, "pass --resume",
         setup=_file("r.jsonl", '{"header": {"kind": "run-results"}}\n')),
    Case("run-resume-without-out", [*RUN, "--resume"], 2, "--resume: needs --out"),
    Case("run-resume-headerless-file", [*RUN, "--out", "{tmp}/r.jsonl", "--resume"], 2, "has no header record",
         setup=_file("r.jsonl", '{"problem_id": "x"}\n')),
    Case("run-resume-other-kind", [*RUN, "--out", "{tmp}/r.jsonl", "--resume"], 2, "holds labels records",
         setup=_file("r.jsonl", '{"header": {"kind": "labels"}}\n')),
    Case("run-concurrency-0", [*RUN, "--concurrency", "0"], 2, "Invalid value for '--concurrency'"),
    Case("run-concurrency-negative", [*RUN, "--concurrency", "-3"], 2, "Invalid value for '--concurrency'"),
    Case("run-problems-0", [*RUN, "--problems", "0"], 2, "Invalid value for '--problems'"),
    Case("run-n-0", [*RUN, "--n", "0"], 2, "Invalid value for '--n'"),
    Case("run-threads-0", [*RUN, "--threads", "0"], 2, "Invalid value for '--threads'"),
    Case("run-prompt-over-context-window", ["sglang-stop", "run", "--model", "{testbed}", "--task", "mmath:aime2024",
                                            "--problems", "1", "--n", "2", "--prefix-len", "8", "--keep", "1"], 2,
         "exceeds the model's context window (128 tokens)"),
    Case("run-prefix-without-keep", [*RUN[:-6], "--prefix-len", "8"], 2, "--prefix-len and --keep go together"),
    Case("run-keep-above-n", [*RUN, "--keep", "9"], 2, "stages.0.keep: 9 exceeds the 4 paths alive"),
    Case("run-checkpoint-with-other-scorer", [*RUN, "--scorer", "confidence", "--checkpoint", "{testbed_stop}"], 2,
         "--checkpoint: only the stop scorer takes a checkpoint"),
    Case("run-scorer-options-not-json", [*RUN, "--scorer", "confidence", "--scorer-options", "{{window: 1"], 2,
         "--scorer-options: not JSON"),
    Case("run-scorer-options-not-object", [*RUN, "--scorer", "confidence", "--scorer-options", "[1]"], 2,
         "--scorer-options: expected a JSON object"),
    Case("run-scorer-options-unknown", [*RUN, "--scorer", "confidence", "--scorer-options", '{{"windw": 1}}'], 2,
         "scorer.options.windw"),
    Case("run-scorer-options-bool-for-int", [*RUN, "--scorer", "confidence", "--scorer-options", '{{"window": true}}'],
         2, "scorer.options.window"),
    Case("run-unknown-scorer", [*RUN, "--scorer", "bogus"], 2, "unknown scorer 'bogus'"),
    Case("run-empty-question", [*RUN, "--question", " "], 2, "--question: empty"),
    Case("run-version", ["sglang-stop", "--version"], 0, "sglang-stop 0.1.0"),
    Case("bench-decode-runs", ["sglang-stop", "bench", "decode", "--model", "{testbed}", "--branches", "1,4",
                               "--tokens", "8"], 0, "tokens/s"),
    Case("bench-decode-bad-branches", ["sglang-stop", "bench", "decode", "--model", "{testbed}", "--branches", "1,x"],
         2, "--branches: expected comma-separated positive integers"),
    Case("bench-scoring-bad-prefix-lens", ["sglang-stop", "bench", "scoring", "--model", "{testbed}",
                                           "--prefix-lens", "0,16"], 2, "--prefix-lens: expected comma-separated"),
    Case("bench-compare-online-not-json", ["sglang-stop", "bench", "compare", "--online", "warmup=4"], 2,
         "--online: not JSON"),
    Case("bench-compare-online-unknown-key", ["sglang-stop", "bench", "compare", "--online", '{{"warmup": 4, "bar": 1}}'],
         2, "--online: online.bar: unknown key"),
    Case("bench-compare-bad-scorer-option", ["sglang-stop", "bench", "compare", "--scorers", "none,confidence",
                                             "--scorer-options", 'confidence={{"reduce": "median"}}'],
         2, "scorer.options.reduce: Input should be"),
    Case("bench-verifier-model-alone", ["sglang-stop", "bench", "verifier", "--model", "{testbed}"], 2,
         "--model: name its --checkpoint and --verifier too"),
    Case("calibrate-bad-prefix-lens", ["sglang-stop", "calibrate", *TB, "--prefix-lens", "8,x", "--out",
                                       "{tmp}/c.jsonl"], 2, "--prefix-lens: expected comma-separated"),
    Case("calibrate-has-no-keep-option", ["sglang-stop", "calibrate", *TB, "--keep", "2", "--out", "{tmp}/c.jsonl"],
         2, "--keep"),
    Case("run-sigint-keeps-results", LONG, 130, "rerun the same command with --resume", signal="SIGINT",
         signal_after=2, timeout=120),
    Case("run-sigint-repeated-no-traceback", LONG, 130, "rerun the same command with --resume",
         signal="SIGINT", signal_after=1, signal_times=40, timeout=120),
    Case("run-sigterm-keeps-results", LONG, 143, "interrupted by SIGTERM after", signal="SIGTERM", signal_after=1,
         timeout=120),
]
