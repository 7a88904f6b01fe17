"""The one config schema shared by the runtime, the advisor's output and production servers.

Every field is validated here, so a bad file fails at load time with the field's dotted path
(``stages.0.keep: ...``) instead of deep inside a run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sglang_stop.errors import UserError

SCHEMA_VERSION = 1


class _Strict(BaseModel):
    """Unknown keys are errors: a typo in a config must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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
        if self.keep is not None:
            return min(self.keep, alive)
        return max(1, min(alive, math.ceil(alive * float(self.keep_ratio))))  # type: ignore[arg-type]


class ScorerSpec(_Strict):
    name: str = Field("none", description="a registered scorer: none, random, confidence, entropy, stop, ...")
    options: dict[str, Any] = Field(default_factory=dict, description="scorer-specific options")


class AggregationConfig(_Strict):
    method: Literal["majority", "weighted"] = Field(
        "majority", description="majority vote, or votes weighted by the last stage's scores"
    )


class ConsensusConfig(_Strict):
    """Stop the remaining paths once one answer has ``votes`` finished paths behind it."""

    votes: int = Field(..., ge=1)
    chunk_tokens: int = Field(32, ge=1, description="paths are checked every this many tokens")


class ModelSpec(_Strict):
    path: str | None = Field(None, description="local Hugging Face model directory; null = embedded default")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"


class RuntimeConfig(_Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    n: int = Field(8, ge=1, le=1024, description="paths launched per problem")
    stages: list[PruneStage] = Field(default_factory=list, description="prune points, in order")
    scorer: ScorerSpec = Field(default_factory=ScorerSpec)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    aggregation: AggregationConfig = Field(default_factory=AggregationConfig)
    consensus: ConsensusConfig | None = None
    model: ModelSpec = Field(default_factory=ModelSpec)
    task: str | None = Field(None, description="default task for `sglang-stop run`")
    prompt: str | None = Field(None, description="user message with {question}; null = the task's default")
    chat_template: bool | None = Field(None, description="wrap the prompt in the model's chat template; null = the task's default")
    seed: int = 0
    metadata: dict[str, Any] = Field(default_factory=dict, description="free-form (the advisor's predictions)")

    @model_validator(mode="after")
    def _stages_consistent(self) -> RuntimeConfig:
        alive = self.n
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
            alive = st.kept(alive)
            last_len = st.prefix_len
        if self.prompt is not None and "{question}" not in self.prompt:
            raise ValueError("prompt: must contain '{question}'")
        return self

    def alive_after_stages(self) -> list[int]:
        alive, out = self.n, []
        for st in self.stages:
            alive = st.kept(alive)
            out.append(alive)
        return out


class ConfigError(UserError):
    """A config file or value that does not validate; the message names the file and field."""


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {loc + ': ' if loc else ''}{msg}")
    return "\n".join(lines)


def config_from_dict(data: Any, source: str = "<config>") -> RuntimeConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping, got {type(data).__name__}")
    try:
        return RuntimeConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def load_config(path: str | Path) -> RuntimeConfig:
    """Load a YAML or JSON config; errors name the file and the line (syntax) or field (schema)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    text = p.read_text()
    try:
        if p.suffix == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{p}:{e.lineno}: invalid JSON: {e.msg}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}{line}: invalid YAML: {getattr(e, 'problem', e)}") from None
    return config_from_dict(data, str(p))


def dump_config(cfg: RuntimeConfig, path: str | Path) -> None:
    """Write atomically (temp file + rename) so a crash never leaves half a config."""
    from sglang_stop.io import atomic_write_text

    p = Path(path)
    data = cfg.model_dump(mode="json")
    text = json.dumps(data, indent=2) + "\n" if p.suffix == ".json" else yaml.safe_dump(data, sort_keys=False)
    atomic_write_text(p, text)


def json_schema() -> dict[str, Any]:
    return RuntimeConfig.model_json_schema()
