"""The one config schema shared by the runtime, the advisor's output and production servers.

Every field is validated here, so a bad file fails at load time with the field's dotted path
(``stages.0.keep: ...``) instead of deep inside a run. Types are strict (``n: true`` or ``n: 4.0``
is an error, not 1 or 4) because a coerced value hides the mistake; a key given twice in a file is
an error, not "the last one wins". Paths in a config file (``model.path``, a ``.jsonl`` ``task``,
``scorer.options.checkpoint``) are relative to the file's directory, so a config means the same
from any working directory; in-memory configs built in Python keep the process's meaning (cwd).
"""

from __future__ import annotations

import json
import os
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from sglang_stop.errors import UserError, validation_message
from sglang_stop.models import is_model_name
from sglang_stop.policy import keep_count

SCHEMA_VERSION: Literal[1] = 1


class _Strict(BaseModel):
    """Unknown keys are errors (a typo must not fall back to a default) and types are strict
    (``true`` is not 1, ``"0.5"`` is not 0.5): a coercion would hide the mistake."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)


class SamplingConfig(_Strict):
    temperature: float = Field(0.7, ge=0.0, description="0 means greedy")
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    top_k: int = Field(40, description="-1 disables top-k")
    max_new_tokens: int = Field(192, ge=1, description="full path length cap, prefix included")
    stop: list[str] = Field(default_factory=list, description="stop strings (excluded from the text)")

    @field_validator("top_k")
    @classmethod
    def _top_k(cls, v: int) -> int:
        if v != -1 and v < 1:
            raise ValueError("must be -1 (disabled) or >= 1")
        return v


class PruneStage(_Strict):
    """Score every surviving path once it has generated ``prefix_len`` tokens; keep the best."""

    prefix_len: int = Field(..., ge=1, description="tokens generated per path when it is scored (cumulative)")
    keep: int | None = Field(None, ge=1, description="paths kept after this stage")
    keep_ratio: float | None = Field(None, gt=0.0, le=1.0, description="fraction kept (ceil, at least 1)")

    @model_validator(mode="after")
    def _one_of(self) -> PruneStage:
        if (self.keep is None) == (self.keep_ratio is None):
            raise ValueError("give exactly one of 'keep' or 'keep_ratio'")
        return self

    def kept(self, alive: int) -> int:
        """Paths kept of ``alive`` (the one rule: sglang_stop.policy.keep_count)."""
        return keep_count(alive, self.keep, self.keep_ratio)


class ScorerSpec(_Strict):
    name: str = Field("none", description="a registered scorer: none, random, confidence, entropy, stop, ...")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="scorer-specific options; in a config file a relative 'checkpoint' is relative to the file's directory",
    )


class AggregationConfig(_Strict):
    method: Literal["majority", "weighted"] = Field(
        "majority", description="majority vote, or votes weighted by the last stage's scores"
    )


class ConsensusConfig(_Strict):
    """Stop the remaining paths once one answer has ``votes`` finished paths behind it."""

    votes: int = Field(..., ge=1)
    chunk_tokens: int = Field(32, ge=1, description="paths are checked every this many tokens")


class OnlineConfig(_Strict):
    """DeepConf's online mode (facebookresearch/deepconf, deepconf-online.py): the first ``warmup`` paths
    run to the end and set the bar at the ``percentile`` of their lowest group confidence (token confidence
    -mean of the top-k logprobs, group = ``window``-token sliding mean); every other path stops as soon as
    its last ``window`` tokens' mean confidence falls below the bar. A path whose lowest group confidence
    is below the bar (stopped, or a warmup path) does not vote. The rule: policy.online_*."""

    warmup: int = Field(4, ge=1, description="paths run to the end first to set the bar (DeepConf: 16 of 256)")
    percentile: float = Field(
        90.0, ge=0, le=100, description="bar = this percentile of the warmup paths' lowest group confidence "
        "(90: DeepConf-low, keeps about the top 10%; 10: DeepConf-high)"
    )
    window: int = Field(16, ge=1, description="group size in tokens (DeepConf: 2048)")
    top_k: int = Field(20, ge=1, le=20, description="token confidence = -mean of the top-k logprobs (backends record 20)")
    check_every: int = Field(1, ge=1, description="tokens between checks (1 = every token, as DeepConf; a "
                             "path stopped mid-chunk has sampled the rest of the chunk)")


class ModelSpec(_Strict):
    path: str | None = Field(
        None,
        description="local Hugging Face model directory, or a model name (smollm2-135m-instruct, smollm2-reasoner); "
        "null = embedded default. In a config file a relative path is relative to the file's directory",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"


def prompt_template_problem(prompt: str) -> str | None:
    """Why ``prompt`` is no valid template (None when it is). It is formatted with ``str.format``, so
    ``{question}`` is its one placeholder and a literal brace is doubled; any other ``{name}`` would
    otherwise fail mid-run or, with str.replace, reach the model as written."""
    escape = "write a literal brace as '{{' or '}}'"
    try:
        parts = list(string.Formatter().parse(prompt))
    except ValueError as e:  # "Single '}' encountered in format string"
        return f"{e} ({escape})"
    found = False
    for _, field, spec, conv in parts:
        if field is None:
            continue
        if field != "question" or spec or conv:
            shown = "{" + field + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
            return f"unknown placeholder '{shown}' (only {{question}} is replaced; {escape})"
        found = True
    return None if found else "must contain '{question}'"


class RuntimeConfig(_Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    n: int = Field(8, ge=1, le=1024, description="paths launched per problem")
    stages: list[PruneStage] = Field(default_factory=list, description="prune points, in order")
    scorer: ScorerSpec = Field(default_factory=ScorerSpec)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    aggregation: AggregationConfig = Field(default_factory=AggregationConfig)
    consensus: ConsensusConfig | None = None
    online: OnlineConfig | None = Field(None, description="DeepConf online early stopping instead of prune stages")
    model: ModelSpec = Field(default_factory=ModelSpec)
    task: str | None = Field(
        None,
        description="default task for `sglang-stop run`; in a config file a relative FILE.jsonl (also inside "
        "mix:) is relative to the file's directory",
    )
    prompt: str | None = Field(
        None,
        description="user message with {question} (the only placeholder; write literal braces as {{ and }}, as "
        "str.format); null = the task's default",
    )
    chat_template: bool | None = Field(None, description="wrap the prompt in the model's chat template; null = the task's default")
    seed: int = 0
    metadata: dict[str, Any] = Field(default_factory=dict, description="free-form (the advisor's predictions)")

    @model_validator(mode="after")
    def _stages_consistent(self, info: ValidationInfo) -> RuntimeConfig:
        alive = self.n
        drops = False
        last_len = 0
        for i, st in enumerate(self.stages):
            if st.prefix_len <= last_len:
                raise ValueError(f"stages.{i}.prefix_len: {st.prefix_len} must exceed the previous stage's ({last_len})")
            if st.prefix_len >= self.sampling.max_new_tokens:
                raise ValueError(
                    f"stages.{i}.prefix_len: {st.prefix_len} must be below sampling.max_new_tokens "
                    f"({self.sampling.max_new_tokens})"
                )
            if st.keep is not None and st.keep > alive:
                where = "n" if i == 0 else f"stages.{i - 1} keeps"
                raise ValueError(f"stages.{i}.keep: {st.keep} exceeds the {alive} paths alive ({where}={alive})")
            drops = drops or st.kept(alive) < alive
            alive = st.kept(alive)
            last_len = st.prefix_len
        # The program skips the stages of a scorer that never prunes. Refused where a user wrote the
        # config (a file, the command line: context user_input) or named the scorer; Python callers that
        # pass their scorer object separately (calibration's recorder, tests) leave it at the default.
        user = bool(info.context and info.context.get("user_input")) or "scorer" in self.model_fields_set
        if drops and self.scorer.name == "none" and user:
            raise ValueError(
                "stages: scorer 'none' never prunes; these stages would be skipped: drop them or name a pruning "
                "scorer (scorer.name: confidence, stop, ...)"
            )
        if self.consensus is not None and self.consensus.votes > self.n:
            raise ValueError(
                f"consensus.votes: {self.consensus.votes} exceeds n ({self.n}): no answer can get that many votes"
            )
        if self.online is not None:
            if self.stages:
                raise ValueError("online: DeepConf's online mode stops paths itself; drop the stages")
            if self.consensus is not None:
                raise ValueError("online: not combined with consensus; give one of them")
            if self.online.warmup > self.n:
                raise ValueError(f"online.warmup: {self.online.warmup} exceeds n ({self.n})")
        if self.prompt is not None:
            problem = prompt_template_problem(self.prompt)
            if problem:
                raise ValueError(f"prompt: {problem}")
        return self

    def alive_after_stages(self) -> list[int]:
        alive, out = self.n, []
        for st in self.stages:
            alive = st.kept(alive)
            out.append(alive)
        return out


class ConfigError(UserError):
    """A config file or value that does not validate; the message names the file and field."""


UNKNOWN_KEY = "unknown key (`sglang-stop schema` lists the fields)"


def config_from_dict(data: Any, source: str = "<config>", base_dir: str | Path | None = None) -> RuntimeConfig:
    """Validate user input (a file's contents, the command line); ``base_dir`` is the directory
    relative paths in it are relative to (the config file's), None = leave them as written."""
    if not isinstance(data, dict):
        got = "an empty file" if data is None else type(data).__name__
        raise ConfigError(f"{source}: top level must be a mapping, got {got}")
    try:
        cfg = RuntimeConfig.model_validate(data, context={"user_input": True})
    except ValidationError as err:
        raise ConfigError(validation_message(err, source, unknown=UNKNOWN_KEY)) from None
    if base_dir is None:
        return cfg
    base = Path(os.path.abspath(base_dir))
    resolved = cfg.model_dump()
    _map_paths(resolved, lambda field, value: _relative_to(value, base, field, source))
    return RuntimeConfig.model_validate(resolved, context={"user_input": True})


def _relative_to(value: str, base: Path, field: str, source: str) -> str:
    """``value`` resolved against ``base`` (the config's directory). A path that exists only relative
    to the working directory is refused: it is ambiguous and the old cwd rule would have meant it."""
    p = Path(value).expanduser()
    if p.is_absolute():
        return str(p)
    resolved = Path(os.path.abspath(base / p))
    if not resolved.exists() and p.exists() and resolved != Path(os.path.abspath(p)):
        raise ConfigError(
            f"{source}: {field}: '{value}' is relative to the config file's directory, and {resolved} does not "
            f"exist (it does relative to the working directory): write it relative to {base} or absolute"
        )
    return str(resolved)


def _map_paths(data: dict[str, Any], fn: Callable[[str, str], str]) -> None:
    """Replace every path a config holds (in a ``model_dump`` dict) by ``fn(field, path)``."""
    if data["model"]["path"] is not None and not is_model_name(data["model"]["path"]):
        data["model"]["path"] = fn("model.path", data["model"]["path"])
    task = (data["task"] or "").strip()
    if task.startswith("mix:"):  # the FILE.jsonl components of a mix (k=v pieces hold no path)
        pieces = task.removeprefix("mix:").split(",")
        data["task"] = "mix:" + ",".join(
            fn("task", x.strip()) if x.strip().endswith(".jsonl") and "=" not in x else x for x in pieces
        )
    elif task.endswith(".jsonl") and ":" not in task:  # a task file; not mmath:/name:k=v specs
        data["task"] = fn("task", task)
    opts = data["scorer"]["options"]
    if isinstance(opts.get("checkpoint"), str):
        opts["checkpoint"] = fn("scorer.options.checkpoint", opts["checkpoint"])


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping key given twice (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` overrides are the point of merges
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # unhashable key: the base class reports it
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' given twice (first at line {first}); remove one", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateJsonKey(k)
        out[k] = v
    return out


class _DuplicateJsonKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _read_text(p: Path) -> str:
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read the config file: {e.strerror or e}") from None
    if b"\x00" in raw[:8192]:
        raise ConfigError(f"{p}: a binary file, not a YAML or JSON config")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(f"{p}:{line}: not UTF-8 text (byte 0x{raw[e.start]:02x}); save the config as UTF-8") from None


def _yaml_error(p: Path, e: yaml.YAMLError) -> ConfigError:
    mark = getattr(e, "problem_mark", None)
    line = f":{mark.line + 1}" if mark is not None else ""
    return ConfigError(f"{p}{line}: invalid YAML: {' '.join(str(getattr(e, 'problem', None) or e).split())}")


def load_config(path: str | Path) -> RuntimeConfig:
    """Load a YAML or JSON config; errors name the file and the line (syntax, a duplicate key) or the
    field (schema). Relative paths inside are relative to the file's directory."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p}: a directory, not a config file")
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    text = _read_text(p)
    try:
        if p.suffix == ".json":
            data = json.loads(text, object_pairs_hook=_json_pairs)
        else:
            data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except json.JSONDecodeError as e:
        raise ConfigError(f"{p}:{e.lineno}: invalid JSON: {e.msg}") from None
    except _DuplicateJsonKey as e:
        try:  # JSON is YAML here; the YAML loader knows the line of the second key
            yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506
        except yaml.YAMLError as ye:
            mark = getattr(ye, "problem_mark", None)
            if mark is not None and "given twice" in str(getattr(ye, "problem", "")):
                raise ConfigError(f"{p}:{mark.line + 1}: invalid JSON: {ye.problem}") from None
        raise ConfigError(f"{p}: invalid JSON: key '{e.key}' given twice; remove one") from None
    except yaml.YAMLError as e:
        raise _yaml_error(p, e) from None
    return config_from_dict(data, str(p), base_dir=p.parent)


def _for_file(value: str, out_dir: Path) -> str:
    """An in-memory (cwd-relative) path as a file at ``out_dir`` must say it: relative to that
    directory when it lies below it, else absolute."""
    target = Path(os.path.abspath(Path(value).expanduser()))
    try:
        return target.relative_to(out_dir).as_posix()
    except ValueError:
        return str(target)


def dump_config(cfg: RuntimeConfig, path: str | Path) -> None:
    """Write atomically (temp file + rename) so a crash never leaves half a config. Relative paths are
    rewritten for the file's directory, so ``load_config`` of the file points where ``cfg`` did."""
    from sglang_stop.io import atomic_write_text

    p = Path(path)
    data = cfg.model_dump(mode="json")
    out_dir = Path(os.path.abspath(p.parent))
    _map_paths(data, lambda _field, value: _for_file(value, out_dir))
    text = json.dumps(data, indent=2) + "\n" if p.suffix == ".json" else yaml.safe_dump(data, sort_keys=False)
    atomic_write_text(p, text)


def json_schema() -> dict[str, Any]:
    return RuntimeConfig.model_json_schema()
