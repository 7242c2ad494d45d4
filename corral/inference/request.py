"""What the inference service takes and gives: one request, the pieces of its answer, and what is loaded.

Plain values, built by the API layer and read by it: the service never changes a request it was given, so a route
may look at its request again after the answer (the OpenAI family does, to shape the last chunk).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from corral.store.model import Model


@dataclass(frozen=True, kw_only=True)
class InferenceRequest:
    """Everything one generation asks of the engine, already validated by the API layer."""

    model: Model
    messages: list[dict[str, Any]] | None = None  # chat
    prompt: str | None = None  # generate
    system: str | None = None
    suffix: str = ""
    template: str | None = None
    raw: bool = False
    images: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    keep_alive: float | None = None
    format: Any = None
    think: bool | str | None = None
    tools: list[dict[str, Any]] | None = None
    context: list[int] | None = None
    want_context: bool = False
    # tool_choice (the /v1 APIs; Ollama's own API has none): "auto" lets the model decide; "required" forces one
    # call to one of ``tools`` (to one of ``tool_choice_names`` when given) by constrained decoding.
    tool_choice: str = "auto"
    tool_choice_names: list[str] | None = None
    parallel_tool_calls: bool = True  # False: calls after the first are dropped
    tool_call_deltas: bool = False  # stream calls' arguments as they are generated (Piece.tool_call_delta)
    truncate: bool = True  # drop old messages, then the prompt's middle, to fit num_ctx; False: too long is a 400
    shift: bool = True  # let the engine drop old context as the answer grows; False: stop at a full context
    logprobs: bool = False  # return each generated token's log probability (Piece.logprobs)
    top_logprobs: int = 0  # and this many most likely alternatives at each position (0-20)

    @property
    def forces_call(self) -> bool:
        """Whether ``tool_choice`` forces a call (chat requests with tools only)."""
        return self.tool_choice == "required" and bool(self.tools) and self.messages is not None and not self.raw


@dataclass(slots=True)
class Piece:
    content: str = ""
    thinking: str = ""
    tool_calls: list[dict[str, Any]] | None = None  # complete calls, Ollama-shaped: {"id"?, "function": {...}}
    # A call still being generated (only when the request sets ``tool_call_deltas``): first {"index", "id",
    # "name"}, then {"index", "arguments": <the next piece of its JSON text>}; the whole call follows in tool_calls.
    tool_call_delta: dict[str, Any] | None = None
    # Tokens whose text is in this piece (or was held back before it), Ollama-shaped: {"token", "logprob", "bytes",
    # "top_logprobs"?} (corral.inference.logprobs); only when the request asks for logprobs.
    logprobs: list[dict[str, Any]] | None = None


@dataclass(slots=True)
class Final:
    done_reason: str
    prompt_eval_count: int = 0
    prompt_eval_duration: int = 0
    eval_count: int = 0
    eval_duration: int = 0
    load_duration: int = 0
    total_duration: int = 0
    context: list[int] | None = None
    prompt_cached_count: int = 0  # of prompt_eval_count, the tokens served from the prefix cache
    stop_sequence: str | None = None  # the stop string that ended generation, if one did


@dataclass(slots=True)
class Embeddings:
    vectors: list[list[float]]
    prompt_eval_count: int
    load_duration: int
    total_duration: int


@dataclass(frozen=True, slots=True)
class RunningModel:
    """One loaded model as ``/api/ps`` reports it."""

    model: Model
    size: int  # bytes: weights and every slot's KV cache
    expires_at: float | None  # epoch seconds; None: kept loaded until evicted or stopped
    context_length: int
    parallel: int
    slots_busy: int | None  # slots decoding right now, as the engine reports them (None: it did not answer)
    engine: str = "wheel"  # the engine it runs on: "wheel", "cpu-native+rpc", ...
    size_vram: int = 0  # bytes of ``size`` in GPU memory
    devices: tuple[tuple[str, int], ...] = ()  # (device, bytes) as the engine allocated them: CPU, CUDA0, RPC0[...]
    rpc: tuple[str, ...] = ()  # RPC workers the layers are split over
