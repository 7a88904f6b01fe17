"""Battery rows: config files and task specs (issues 12 and 17).

Every row fails while the config or task is read, before a model loads: ``--model {testbed} --task
testbed --problems 1`` keeps the rows fast even if a check were to slip past its stage.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.battery import Case

RUN = ["sglang-stop", "run", "--model", "{testbed}", "--problems", "1"]


def _file(name: str, content: str | bytes) -> Callable[[Path], dict[str, str]]:
    """A setup that writes ``content`` to ``tmp/name`` and names it ``{cfg}``."""

    def setup(tmp: Path) -> dict[str, str]:
        p = tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
        return {"cfg": str(p)}

    return setup


def _config(cid: str, content: str | bytes, fragment: str, name: str = "c.yaml") -> Case:
    return Case(cid, [*RUN, "--task", "testbed", "--config", "{cfg}"], 2, fragment, setup=_file(name, content))


def _task(cid: str, spec: str, fragment: str) -> Case:
    return Case(cid, [*RUN, "--task", spec], 2, fragment)


ROWS: list[Case] = [
    # 1. a key given twice: PyYAML / json keep the last one silently
    _config("config-yaml-duplicate-key", "n: 4\nseed: 1\nn: 8\n", "c.yaml:3: invalid YAML: key 'n' given twice (first at line 1)"),
    _config("config-yaml-duplicate-nested-key", "sampling:\n  top_k: 5\n  top_k: 6\n", "c.yaml:3: invalid YAML: key 'top_k' given twice"),
    _config("config-json-duplicate-key", '{\n  "n": 4,\n  "n": 8\n}\n', "c.json:3: invalid JSON: key 'n' given twice", "c.json"),
    # 2. files that are no text
    _config("config-binary-file", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x01", "c.yaml: a binary file, not a YAML or JSON config"),
    _config("config-not-utf8", b"n: 4\nprompt: caf\xe9 {question}\n", "c.yaml:2: not UTF-8 text (byte 0xe9)"),
    _config("config-empty-file", "# only a comment\n", "top level must be a mapping, got an empty file"),
    Case("config-is-a-directory", [*RUN, "--task", "testbed", "--config", "{tmp}"], 2, "a directory, not a config file"),
    # 3. strict types: no bool -> int, float -> int, str -> number coercion
    _config("config-bool-for-int", "n: true\n", "n: Input should be a valid integer (got true)"),
    _config("config-float-for-int", "sampling: {max_new_tokens: 64.5}\n", "sampling.max_new_tokens: Input should be a valid integer"),
    _config("config-str-for-float", 'sampling: {temperature: "0.7"}\n', "sampling.temperature: Input should be a valid number"),
    _config("config-int-for-bool", "chat_template: 1\n", "chat_template: Input should be a valid boolean (got 1)"),
    # 4. prompt placeholders
    _config("config-prompt-unknown-placeholder", 'prompt: "{question} {bogus}"\n', "prompt: unknown placeholder '{bogus}'"),
    _config("config-prompt-single-brace", 'prompt: "{question} \\\\boxed{}"\n', "prompt: unknown placeholder '{}'"),
    # 5. consensus that can never be reached
    _config("config-consensus-votes-above-n", "n: 4\nconsensus: {votes: 5}\n", "consensus.votes: 5 exceeds n (4)"),
    # 6. stages the program would skip
    _config("config-stages-scorer-none", "n: 4\nstages: [{prefix_len: 4, keep: 2}]\n", "stages: scorer 'none' never prunes"),
    _config("config-stages-scorer-none-ratio", "n: 4\nscorer: {name: none}\nstages: [{prefix_len: 4, keep_ratio: 0.5}]\n",
            "stages: scorer 'none' never prunes"),
    # 8. paths are relative to the config file: one that exists only relative to the cwd is ambiguous
    _config("config-path-relative-to-cwd-only", "model: {path: sglang_stop/assets/testbed}\n",
            "model.path: 'sglang_stop/assets/testbed' is relative to the config file's directory", "confs/c.yaml"),
    Case("config-task-file-relative-to-config", ["sglang-stop", "run", "--model", "{testbed}", "--problems", "1", "--config", "{cfg}"],
         2, "confs/probs.jsonl: task file not found", setup=_file("confs/c.yaml", "task: probs.jsonl\n")),
    # 9. several errors, one line
    _config("config-several-errors-one-line", "n: true\nseed: x\n", "; seed: Input should be a valid integer"),
    # 7. reasoning-gym options
    _task("task-option-wrong-type", "chain_sum:min_terms=abc", "option min_terms=abc rejected: reasoning-gym's chain_sum expects an integer"),
    _task("task-option-unknown", "chain_sum:bogus=1", "unknown option 'bogus' for reasoning-gym chain_sum"),
    _task("task-option-refused", "chain_sum:min_terms=0", "reasoning-gym rejected option min_terms=0: min_terms must be positive"),
    _task("task-options-refused-together", "chain_sum:min_terms=5,max_terms=2", "rejected options min_terms=5, max_terms=2"),
    _task("task-option-twice", "chain_sum:min_terms=2,min_terms=3", "option 'min_terms' given twice"),
    _task("task-option-runner-owned", "chain_sum:size=3", "option 'size' is set by the runner"),
    _task("task-option-in-mix", "mix:chain_sum:min_terms=x,basic_arithmetic", "task 'chain_sum:min_terms=x': option min_terms=x rejected"),
]
