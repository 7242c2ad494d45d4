"""Request and response bodies of the Anthropic-compatible API (``/v1/messages``), as pydantic models.

They document the surface in ``/openapi.json`` and type-check requests. Content blocks are one permissive model
checked in the route, so a bad block gets Ollama's message rather than pydantic's report on a union of ten shapes.
Unknown fields (``metadata``, ``cache_control``, ``service_tier``...) are ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from corral.api.schemas import GoInt


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorResponse(BaseModel):
    """Anthropic's error envelope; the SDK picks the exception class from the HTTP status."""

    type: Literal["error"] = "error"
    error: ErrorDetail
    request_id: str | None = None


class ImageSource(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str
    media_type: str | None = None
    data: str | None = None
    url: str | None = None


class ContentBlock(BaseModel):
    """``text``, ``image``, ``tool_use``, ``tool_result`` or ``thinking`` (``redacted_thinking`` is skipped)."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None
    source: ImageSource | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None
    tool_use_id: str | None = None
    content: str | list[ContentBlock] | None = None
    is_error: bool | None = None
    thinking: str | None = None
    signature: str | None = None


class MessageParam(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    content: str | list[ContentBlock]


class Tool(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str | None = None
    name: str
    description: str | None = None
    input_schema: dict[str, Any] | None = None


class ToolChoice(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class ThinkingConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str
    budget_tokens: GoInt | None = None


class OutputConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")
    effort: str | None = None


class MessagesRequest(_Request):
    model: str = ""
    max_tokens: GoInt = 0
    messages: list[MessageParam] = Field(default_factory=list)
    system: str | list[ContentBlock] | None = None
    stream: bool | None = False
    temperature: float | None = None
    top_p: float | None = None
    top_k: GoInt | None = None
    stop_sequences: list[str] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: ThinkingConfig | None = None
    output_config: OutputConfig | None = None


class Usage(BaseModel):
    input_tokens: int
    output_tokens: int


class ResponseBlock(BaseModel):
    type: Literal["text", "thinking", "tool_use"]
    text: str | None = None
    thinking: str | None = None
    signature: str | None = None
    id: str | None = None
    name: str | None = None
    input: dict[str, Any] | None = None


class MessagesResponse(BaseModel):
    """The whole answer; streamed, the same object arrives as ``message_start``, block and ``message_delta`` events."""

    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[ResponseBlock]
    stop_reason: str | None = None
    stop_sequence: str | None = None
    usage: Usage
