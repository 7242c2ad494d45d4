"""Request and response bodies of the OpenAI-compatible API (``/v1/...``), as pydantic models.

They exist so ``/openapi.json`` documents the ``/v1`` surface and request bodies are type-checked on the way in.
Unknown fields are ignored, as Ollama's Go decoder ignores them: SDKs send many fields Corral has no use for
(``user``, ``n``, ``logit_bias``, ``service_tier``...). Streamed chunks are built as strings on the hot path; the
chunk models here only document their shape.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


# -- errors ------------------------------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: Any = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error envelope; the SDKs read ``error.message`` and pick the exception class from the status."""

    error: ErrorDetail


# -- chat completions ---------------------------------------------------------------------------------------------


class ImageURL(BaseModel):
    model_config = ConfigDict(extra="ignore")
    url: str
    detail: str | None = None


class InputAudio(BaseModel):
    model_config = ConfigDict(extra="ignore")
    data: str
    format: str | None = None


class ContentPart(BaseModel):
    """One part of an array ``content``: ``text``, ``image_url`` or ``input_audio``; checked in the route so the
    error messages match Ollama's (``invalid message format``) rather than pydantic's union report."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None
    image_url: ImageURL | str | None = None
    input_audio: InputAudio | None = None


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = ""
    arguments: str = ""


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = ""
    index: int | None = None
    type: str = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    content: str | list[ContentPart] | None = None
    reasoning: str | None = None
    reasoning_content: str | None = None  # what llama.cpp and some clients send for the same thing
    tool_calls: list[ToolCall] | None = None
    name: str | None = None
    tool_call_id: str | None = None


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ChatTool(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str = "function"
    function: FunctionDefinition


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class JSONSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    type: str
    json_schema: JSONSchemaFormat | None = None


class Reasoning(BaseModel):
    model_config = ConfigDict(extra="ignore")
    effort: str | None = None


class ChatCompletionRequest(_Request):
    model: str = ""
    messages: list[ChatMessage] = Field(default_factory=list)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    response_format: ResponseFormat | None = None
    tools: list[ChatTool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    reasoning: Reasoning | None = None
    reasoning_effort: str | None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = ""
    reasoning: str | None = None
    tool_calls: list[ToolCall] | None = None


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str = "fp_ollama"
    choices: list[ChatChoice]
    usage: Usage


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCall] | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    """One ``data:`` event of a streamed chat completion; the stream ends with ``data: [DONE]``."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str = "fp_ollama"
    choices: list[ChunkChoice]
    usage: Usage | None = None


# -- legacy completions ---------------------------------------------------------------------------------------------


class CompletionRequest(_Request):
    model: str = ""
    prompt: str | list[str] = ""
    suffix: str = ""
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    seed: int | None = None
    stop: str | list[Any] | None = None
    temperature: float | None = None
    top_p: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None


class CompletionChoice(BaseModel):
    text: str
    index: int = 0
    finish_reason: str | None = None


class Completion(BaseModel):
    """The whole answer, and also the shape of each streamed ``data:`` chunk."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str = "fp_ollama"
    choices: list[CompletionChoice]
    usage: Usage | None = None


# -- models -----------------------------------------------------------------------------------------------------------


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


class EmbeddingRequest(_Request):
    model: str = ""
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None


class EmbeddingObject(BaseModel):
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | str
    index: int


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingObject]
    model: str
    usage: EmbeddingUsage
