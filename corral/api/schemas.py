"""Request and response bodies of Ollama's native API, as pydantic models, so the OpenAPI schema documents them.

Field names and omission rules follow Ollama's ``api/types.go``: metric fields are left out when zero, durations are
nanoseconds, timestamps RFC 3339.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator

from corral import config

ThinkValue = bool | Literal["low", "medium", "high", "max"]


class _Request(BaseModel):
    # Unknown fields are ignored, as Go's decoder does.
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


GoInt = Annotated[int, Strict(), Field(ge=-(2**63), le=2**63 - 1)]
"""An integer field as Go's decoder reads one into an int: a JSON integer within 64 bits (not 5.0, not 1e30)."""


def parse_keep_alive(value: Any) -> float | None:
    """Seconds (negative = forever) from a JSON number of seconds or a Go duration string; None when unset. Parsed
    once, into a duration the scheduler can arm: too large means forever, as a negative one does."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("invalid keep_alive")
    if isinstance(value, int | float):
        return config.bounded_keep_alive(float(value))
    if isinstance(value, str):
        try:
            return config.bounded_keep_alive(config.parse_go_duration(value))
        except (ValueError, OverflowError) as exc:
            raise ValueError(str(exc)) from None
    raise ValueError("invalid keep_alive")


class ErrorResponse(BaseModel):
    error: str


class ToolCallFunction(BaseModel):
    model_config = ConfigDict(extra="ignore")
    index: GoInt | None = None
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str | None = None
    function: ToolCallFunction


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    content: str = ""
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None

    @field_validator("role")
    @classmethod
    def _lower(cls, v: str) -> str:
        return v.lower()


class Tool(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str = "function"
    function: dict[str, Any]


class GenerateRequest(_Request):
    model: str = ""
    prompt: str = ""
    suffix: str = ""
    system: str | None = None
    template: str | None = None
    context: list[GoInt] | None = None
    stream: bool | None = True
    raw: bool = False
    format: Any = None
    images: list[str] | None = None
    options: dict[str, Any] | None = None
    keep_alive: float | str | None = None
    think: ThinkValue | None = None
    truncate: bool | None = None
    shift: bool | None = None
    logprobs: bool = False
    top_logprobs: GoInt = 0


class ChatRequest(_Request):
    model: str = ""
    messages: list[Message] = Field(default_factory=list)
    tools: list[Tool] | None = None
    stream: bool | None = True
    format: Any = None
    options: dict[str, Any] | None = None
    keep_alive: float | str | None = None
    think: ThinkValue | None = None
    truncate: bool | None = None
    shift: bool | None = None
    logprobs: bool = False
    top_logprobs: GoInt = 0


class TokenLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class Logprob(TokenLogprob):
    top_logprobs: list[TokenLogprob] | None = None


class Metrics(BaseModel):
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None  # the whole prompt, cached prefix included
    prompt_eval_cached_count: int | None = None  # of those, the tokens the prefix cache served
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None


class GenerateResponse(Metrics):
    model: str
    created_at: str
    response: str = ""
    thinking: str | None = None
    done: bool
    done_reason: str | None = None
    context: list[int] | None = None
    logprobs: list[Logprob] | None = None


class ChatResponse(Metrics):
    model: str
    created_at: str
    message: Message
    done: bool
    done_reason: str | None = None
    logprobs: list[Logprob] | None = None


class ModelDetails(BaseModel):
    parent_model: str = ""
    format: str = ""
    family: str = ""
    families: list[str] | None = None
    parameter_size: str = ""
    quantization_level: str = ""


class ListModel(BaseModel):
    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: ModelDetails


class ListResponse(BaseModel):
    models: list[ListModel]


class ShowRequest(_Request):
    model: str = ""
    name: str = ""
    verbose: bool = False
    system: str | None = None
    template: str | None = None
    options: dict[str, Any] | None = None


class ShowResponse(BaseModel):
    license: str | None = None
    modelfile: str = ""
    parameters: str | None = None
    template: str | None = None
    system: str | None = None
    details: ModelDetails
    messages: list[dict[str, Any]] | None = None
    model_info: dict[str, Any] = Field(default_factory=dict)
    projector_info: dict[str, Any] | None = None  # the projector GGUF's metadata, as model_info (vision models)
    tensors: list[dict[str, Any]] | None = None
    capabilities: list[str] | None = None
    modified_at: str


class CopyRequest(_Request):
    source: str
    destination: str


class DeleteRequest(_Request):
    model: str = ""
    name: str = ""


class DeviceShare(BaseModel):
    """Bytes of a loaded model on one device, as the engine allocated them (``CPU``, ``CUDA0``, ``RPC0[host:port]``)."""

    name: str
    size: int


class ProcessModel(BaseModel):
    name: str
    model: str
    size: int
    digest: str
    details: ModelDetails
    expires_at: str
    size_vram: int = 0
    context_length: int
    parallel: int | None = None  # Corral: the engine's slots for this model
    slots_busy: int | None = None  # Corral: slots decoding right now
    engine: str | None = None  # Corral: the engine it runs on ("wheel", "cpu-native+rpc", ...)
    devices: list[DeviceShare] | None = None  # Corral: where the engine put it, bytes per device
    rpc: list[str] | None = None  # Corral: the RPC workers its layers are split over


class ProcessResponse(BaseModel):
    models: list[ProcessModel]


class VersionResponse(BaseModel):
    version: str
    corral_version: str | None = None


class _ModelRequest(_Request):
    """A body that names a model to load and may set how long it stays and the options it loads with."""

    model: str = ""
    keep_alive: float | str | None = None
    options: dict[str, Any] | None = None


class EmbedRequest(_ModelRequest):
    input: str | list[str] | None = None
    truncate: bool | None = True
    dimensions: GoInt | None = Field(default=None, ge=0)


class EmbedResponse(BaseModel):
    model: str
    embeddings: list[list[float]]
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None


class EmbeddingRequest(_ModelRequest):
    """The legacy ``/api/embeddings`` body."""

    prompt: str = ""


class EmbeddingResponse(BaseModel):
    embedding: list[float]


class TokenizeRequest(_ModelRequest):
    content: str = ""


class TokenizeResponse(BaseModel):
    tokens: list[int]


class DetokenizeRequest(_ModelRequest):
    tokens: list[GoInt] = Field(default_factory=list)


class DetokenizeResponse(BaseModel):
    content: str
