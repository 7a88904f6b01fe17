"""The OpenAI request/response shapes the server accepts and returns, as pydantic models.

Requests are strict about what they do not implement: an unknown field, or an OpenAI option the
server would have to ignore (``logprobs``, ``tools``, ``n`` other than 1, ...), is a 400 naming it,
never a silently different answer. STOP's own per-request settings live in one namespaced field,
``sglang_stop`` (config fields, validated by the runtime's ``RuntimeConfig``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="the served model's id (GET /v1/models); omitted = that one")
    temperature: float | None = Field(None, description="-> sampling.temperature")
    top_p: float | None = Field(None, description="-> sampling.top_p")
    max_tokens: int | None = Field(None, description="-> sampling.max_new_tokens (each path's cap)")
    seed: int | None = Field(None, description="-> seed (path i's sampling seed derives from it)")
    stop: str | list[str] | None = Field(None, description="stop strings -> sampling.stop")
    n: int = Field(1, description="choices per request: only 1 (the voted answer); N paths is sglang_stop.n")
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    user: str | None = None
    sglang_stop: dict[str, Any] | None = Field(
        None, description="runtime-config overrides for this request: n, stages, scorer, sampling, aggregation, consensus"
    )

    @field_validator("n")
    @classmethod
    def _one_choice(cls, v: int) -> int:
        if v != 1:
            raise ValueError("only n=1 is served (one voted answer); set the number of paths with sglang_stop.n")
        return v

    @field_validator("stream_options")
    @classmethod
    def _stream_options(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        unknown = set(v or {}) - {"include_usage"}
        if unknown:
            raise ValueError(f"unsupported option(s) {sorted(unknown)} (usage is always sent in the last chunk)")
        return v


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[dict[str, Any]]
    name: str | None = None

    def text(self) -> str:
        """The content as text; only text parts are accepted (an image would be dropped)."""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for i, part in enumerate(self.content):
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError(f"content.{i}: only text parts are supported (got type {part.get('type')!r})")
            parts.append(part["text"])
        return "".join(parts)


class ChatRequest(_Request):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = Field(None, description="OpenAI's newer name for max_tokens")

    @field_validator("messages")
    @classmethod
    def _non_empty(cls, v: list[ChatMessage]) -> list[ChatMessage]:
        if not v:
            raise ValueError("must be a non-empty list of messages")
        return v


class CompletionRequest(_Request):
    prompt: str | list[str]

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and len(v) != 1:
            raise ValueError("one prompt per request (got a list of %d)" % len(v))
        text = v if isinstance(v, str) else v[0]
        if not text:
            raise ValueError("must be a non-empty string")
        return v

    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class PathInfo(BaseModel):
    index: int
    answer: str | None
    tokens: int
    scores: list[float]
    pruned_at: int | None
    stopped_by_consensus: bool
    finished: bool


class StopUsage(BaseModel):
    """The extension object in ``usage.sglang_stop``: what the pruned program did and saved."""

    paths_launched: int
    paths_pruned: int
    paths_stopped_by_consensus: int
    tokens_unpruned_estimate: int = Field(description="sampled tokens had no path been pruned (pruned paths "
                                          "costed at the mean length of the paths that voted)")
    tokens_saved_estimate: int
    answer: str | None
    votes: dict[str, float]
    chosen_path: int | None = Field(description="the path whose text is the message content")
    paths: list[PathInfo]
    scorer: str
    stages: list[dict[str, Any]]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int = Field(description="every sampled token of every path, pruned prefixes included")
    total_tokens: int
    sglang_stop: StopUsage
