"""Request and response bodies of the OpenAI-compatible API (``/v1/...``), as pydantic models.

They exist so ``/openapi.json`` documents the ``/v1`` surface and request bodies are type-checked on the way in.
Unknown fields are ignored, as Ollama's Go decoder ignores them: SDKs send many fields Corral has no use for
(``user``, ``n``, ``logit_bias``, ``service_tier``...). Streamed chunks are built as strings on the hot path; the
chunk models here only document their shape.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from corral.api.schemas import GoInt


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
    index: GoInt | None = None
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
    max_tokens: GoInt | None = None
    max_completion_tokens: GoInt | None = None
    seed: GoInt | None = None
    stop: str | list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    response_format: ResponseFormat | None = None
    tools: list[ChatTool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
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
    max_tokens: GoInt | None = None
    seed: GoInt | None = None
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
    dimensions: GoInt | None = Field(default=None, ge=1)
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


# -- responses ------------------------------------------------------------------------------------------------------


class ResponsesContent(BaseModel):
    """One content part of an input item: ``input_text``, ``output_text``, ``input_image`` or ``input_file``;
    checked in the route so an unknown type gets Ollama's message rather than pydantic's union report."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None
    image_url: str | None = None
    detail: str | None = None
    file_id: str | None = None


class ResponsesSummary(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str = "summary_text"
    text: str = ""


class ResponsesInputItem(BaseModel):
    """Any input item (``message``, ``function_call``, ``function_call_output``, ``reasoning``), flat: the route
    dispatches on ``type``. A ``{role, content}`` item without ``type`` is a message, as in Ollama."""

    model_config = ConfigDict(extra="allow")
    type: str | None = None
    id: str | None = None
    role: str | None = None
    content: str | list[ResponsesContent] | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | list[ResponsesContent] | None = None
    summary: list[ResponsesSummary] | None = None
    encrypted_content: str | None = None


class ResponsesTool(BaseModel):
    """A tool in the Responses API's flat shape (no ``function`` wrapper)."""

    model_config = ConfigDict(extra="allow")
    type: str = "function"
    name: str = ""
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ResponsesTextFormat(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    type: str = "text"
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponsesText(BaseModel):
    model_config = ConfigDict(extra="ignore")
    format: ResponsesTextFormat | None = None


class ResponsesReasoning(BaseModel):
    model_config = ConfigDict(extra="ignore")
    effort: str | None = None
    summary: str | None = None


class ResponsesRequest(_Request):
    model: str = ""
    input: str | list[ResponsesInputItem] = ""
    instructions: str | None = None
    max_output_tokens: GoInt | None = None
    temperature: float | None = None
    top_p: float | None = None
    reasoning: ResponsesReasoning | None = None
    text: ResponsesText | None = None
    tools: list[ResponsesTool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    truncation: str | None = None
    previous_response_id: str | None = None
    stream: bool | None = False


class ResponsesOutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[Any] = Field(default_factory=list)


class ResponsesOutputItem(BaseModel):
    """``message`` (role, content), ``function_call`` (call_id, name, arguments) or ``reasoning`` (summary)."""

    id: str
    type: Literal["message", "function_call", "reasoning"]
    status: str | None = None
    role: Literal["assistant"] | None = None
    content: list[ResponsesOutputText] | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    summary: list[ResponsesSummary] | None = None
    encrypted_content: str | None = None


class ResponsesIncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens"]


class ResponsesError(BaseModel):
    code: str
    message: str


class ResponsesUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_tokens_details: dict[str, int]
    output_tokens_details: dict[str, int]


class ResponseObject(BaseModel):
    """The whole answer; streamed events carry it in ``response.created/in_progress/completed/incomplete``."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    completed_at: int | None = None
    status: Literal["in_progress", "completed", "incomplete", "failed"]
    incomplete_details: ResponsesIncompleteDetails | None = None
    error: ResponsesError | None = None
    model: str
    instructions: str | None = None
    output: list[ResponsesOutputItem]
    usage: ResponsesUsage | None = None
