"""Request building: what one generation sends to the engine, on the rendered or the native path.

Two prompt paths, as Ollama has them. Rendered: the model has a Go ``TEMPLATE`` (or the request is raw, or a
generate without any template): Corral renders the prompt, fits the history into ``num_ctx`` and sends text to the
engine's ``/completion``. Native: a chat with no Go template: the engine applies the GGUF's Jinja template through
``/v1/chat/completions`` and parses tool calls and reasoning itself. A forced tool call (``tool_choice``) always
completes text directly after the call's opening tag, so the engine's grammar shapes the call from its first byte.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from corral.errors import InferenceError, RequestError, TemplateError
from corral.inference import options
from corral.inference.grammar import llguidance_schema, schema_to_grammar
from corral.inference.request import InferenceRequest
from corral.inference.runner.client import RunnerClient
from corral.inference.structured import engine_schema
from corral.parsers.forced import call_schema, tool_name
from corral.parsers.tools import jinja_tool_call_prefix, tool_call_prefix
from corral.store.model import parse_template
from corral.templates import prompt as prompts
from corral.templates.gotemplate import Template

COMPLETION = "/completion"
CHAT = "/v1/chat/completions"


@dataclass(frozen=True, slots=True)
class Settings:
    """What a request resolves to before a runner is leased: sampling fields, template, thinking, forcing."""

    sampling: dict[str, Any]
    template: Template | None  # the Go template to render with (the model's, or the request's override)
    think: bool | str | None  # after Ollama's default: a thinking-capable model thinks unless told not to
    forced_names: list[str] | None  # the tools a forced call may name; None when no call is forced
    schema: dict[str, Any] | None = None  # the format's schema ({} for "json"), whose grammar is in sampling


@dataclass(frozen=True, slots=True)
class EngineCall:
    """One request to the engine and what reading its stream needs."""

    endpoint: str  # COMPLETION or CHAT
    body: dict[str, Any]
    prompt: str  # the text sent to COMPLETION ("" on CHAT)
    template: Template | None  # parses thinking and tool calls out of rendered-path output; None: pass text through
    think: bool  # whether the output may open with thinking
    forced_names: list[str] | None


def settle(req: InferenceRequest, merged: dict[str, Any], num_ctx: int) -> Settings:
    """Sampling fields, template and thinking for a request; raises RequestError for a bad format or template."""
    sampling = options.engine_sampling(merged, num_ctx)
    schema = engine_schema(req.format)
    if schema is not None:
        # A GBNF grammar built with llama.cpp's converter rules, as Ollama samples under (corral.inference.grammar):
        # a json_schema would go through the engine's llguidance, which allows keys beyond the schema.
        sampling["grammar"] = schema_to_grammar(schema)
    template = req.model.go_template() if req.template is None else template_override(req.template)
    think = req.think
    if isinstance(think, str) and not req.raw and not _levels(req, template):
        # Ollama's rule: a level only where the model can act on it, never quietly turned into plain "on"
        raise RequestError(f'think value "{think}" is not supported for this model')
    forced_names = None
    if req.forces_call:
        # One call by construction: the schema replaces any response format, and thinking is skipped, since the
        # call must follow the prompt directly.
        sampling["json_schema"] = call_schema(req.tools or [], req.tool_choice_names)
        sampling.pop("grammar", None)
        schema = None
        sampling.pop("stop", None)  # a stop string must not cut the call's JSON short
        think = False
        forced_names = _forced_names(req)
    elif think is None and "thinking" in req.model.capabilities():
        think = True  # Ollama thinks by default when the model can
    return Settings(sampling=sampling, template=template, think=think, forced_names=forced_names, schema=schema)


async def build(client: RunnerClient, req: InferenceRequest, settings: Settings, num_ctx: int) -> EngineCall:
    """The engine call for a request (tokenizing or applying the engine's template where the prompt needs it)."""
    tmpl = settings.template
    think = bool(think_flag(settings.think))
    forced = settings.forced_names is not None
    if tmpl is None and req.messages is not None and not req.raw and not forced:
        return EngineCall(CHAT, _chat_body(req, settings), "", None, think, None)
    if tmpl is None and forced:
        text = await native_prompt(client, req, settings.think)
        text += jinja_tool_call_prefix(req.model.info.chat_template or "")
        return EngineCall(COMPLETION, _completion_body(text, settings), text, None, think, settings.forced_names)
    try:
        text = await _render(client, req, tmpl, settings.think, num_ctx)
    except TemplateError as exc:
        raise InferenceError(f"template error: {exc}") from exc
    if forced and tmpl is not None:
        text += tool_call_prefix(tmpl)
    parse_with = None if req.raw else tmpl
    return EngineCall(COMPLETION, _completion_body(text, settings), text, parse_with, think, settings.forced_names)


def template_override(source: str) -> Template:
    """A request's ``template`` override; a parse error is the client's (400)."""
    try:
        return parse_template(source)
    except TemplateError as exc:
        raise RequestError(f"template error: {exc}") from exc


def think_flag(think: bool | str | None) -> bool | None:
    """A ``think`` value as on/off (a level means on); None when the request left it to the model."""
    if think is None:
        return None
    if isinstance(think, str):
        return True
    return bool(think)


def think_level(think: bool | str | None) -> str | None:
    if think is True:
        return "medium"
    if isinstance(think, str):
        return think
    return None


def with_model_messages(req: InferenceRequest) -> list[dict[str, Any]]:
    """The request's messages after the model's MESSAGE layer, with the model's SYSTEM first unless one is given."""
    model = req.model
    messages = [*model.messages, *(req.messages or [])]
    if model.system and (not messages or messages[0].get("role") != "system"):
        messages.insert(0, {"role": "system", "content": model.system})
    return messages


async def native_prompt(client: RunnerClient, req: InferenceRequest, think: bool | str | None) -> str:
    """The prompt the engine's Jinja template makes of the chat (a forced tool call completes it directly)."""
    body: dict[str, Any] = {"messages": [engine_message(m) for m in with_model_messages(req)]}
    if req.tools:
        body["tools"] = req.tools
    flag = think_flag(think)
    if flag is not None:
        body["chat_template_kwargs"] = {"enable_thinking": flag}
    data = await client.post("/apply-template", body)
    return str(data.get("prompt", ""))


def engine_message(m: dict[str, Any]) -> dict[str, Any]:
    """A native (Ollama) message in the engine's OpenAI shape: arguments as JSON text, thinking as reasoning."""
    out: dict[str, Any] = {"role": m.get("role", "user"), "content": m.get("content", "")}
    if m.get("thinking"):
        out["reasoning_content"] = m["thinking"]
    if m.get("tool_calls"):
        calls = []
        for i, call in enumerate(m["tool_calls"]):
            fn = call.get("function", {})
            calls.append({"id": call.get("id") or f"call_{i}", "type": "function",
                          "function": {"name": fn.get("name", ""), "arguments": json.dumps(fn.get("arguments", {}))}})
        out["tool_calls"] = calls
    if m.get("tool_call_id"):
        out["tool_call_id"] = m["tool_call_id"]
    if m.get("tool_name") and m.get("role") == "tool":
        out["name"] = m["tool_name"]
    return out


def _levels(req: InferenceRequest, template: Template | None) -> bool:
    if template is not None:
        return bool(template.references("ThinkLevel"))
    return req.model.think_levels()


def _forced_names(req: InferenceRequest) -> list[str]:
    names = [n for n in (tool_name(t) for t in req.tools or ()) if n is not None]
    if req.tool_choice_names is not None:
        names = [n for n in names if n in req.tool_choice_names]
    return names


def _completion_body(prompt: str, settings: Settings) -> dict[str, Any]:
    return {"prompt": prompt, "cache_prompt": True, **settings.sampling}


def _chat_body(req: InferenceRequest, settings: Settings) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": [engine_message(m) for m in with_model_messages(req)], "cache_prompt": True,
                            **settings.sampling}
    body["max_tokens"] = body.pop("n_predict")
    if "json_schema" in body:
        schema = body.pop("json_schema")
        body["response_format"] = {"type": "json_schema", "json_schema": {"schema": schema}} if schema else {
            "type": "json_object"}
    if req.tools:
        body["tools"] = req.tools
        if not req.parallel_tool_calls:
            body["parallel_tool_calls"] = False
        if body.pop("grammar", None) is not None and settings.schema is not None:
            # The engine refuses a grammar beside tools; the schema goes to llguidance, rewritten to mean the same.
            schema = llguidance_schema(settings.schema or {"type": "object"})
            body["response_format"] = {"type": "json_schema", "json_schema": {"schema": schema}}
    flag = think_flag(settings.think)
    if flag is not None:
        body["chat_template_kwargs"] = {"enable_thinking": flag}
        if isinstance(settings.think, str):  # a level, for a template that reads reasoning_effort
            body["chat_template_kwargs"]["reasoning_effort"] = settings.think
    return body


# -- the rendered path: Corral renders the Go template, the engine completes raw text -------------------------------


async def _render(client: RunnerClient, req: InferenceRequest, tmpl: Template | None, think: bool | str | None,
                  num_ctx: int) -> str:
    model = req.model
    if req.raw:
        return req.prompt or ""
    if tmpl is None:
        tmpl = template_override(prompts.DEFAULT_TEMPLATE)
    flag, level = think_flag(think), think_level(think)
    if req.messages is None:
        system = req.system if req.system is not None else model.system
        # A legacy ``context`` carries the earlier turns, so the model's MESSAGE layer is not repeated.
        history = model.messages if not req.context else []
        if req.template is not None and not req.suffix:
            msgs = [*([{"role": "system", "content": system}] if system else []), *history,
                    {"role": "user", "content": req.prompt or ""}]
            text = prompts.execute_values(tmpl, messages=msgs, think=flag, think_level=level)
        else:
            text = prompts.render_generate(tmpl, prompt=req.prompt or "", system=system, suffix=req.suffix,
                                           messages=history, think=flag, think_level=level)
        if req.context:
            text = await client.detokenize(req.context) + text
        return text
    messages = with_model_messages(req)
    text = prompts.render_chat(tmpl, messages, tools=req.tools, think=flag, think_level=level)
    # Bytes bound tokens from above for byte-level tokenizers: most prompts skip tokenizing altogether.
    if len(text.encode()) + 2 <= num_ctx or not req.truncate:  # truncate: false keeps every message
        return text
    return await _fit_history(client, tmpl, messages, req, think, num_ctx, text)


async def _fit_history(client: RunnerClient, tmpl: Template, messages: list[dict[str, Any]], req: InferenceRequest,
                       think: bool | str | None, num_ctx: int, full: str) -> str:
    """Drop the oldest non-system messages until the prompt fits num_ctx; the last message always stays."""
    if len(await client.tokenize(full, add_special=True)) <= num_ctx:
        return full
    system = [m for m in messages if m.get("role") == "system"]
    rest = [m for m in messages if m.get("role") != "system"]
    text = full
    for start in range(1, len(rest)):
        window = system + rest[start:]
        text = prompts.render_chat(tmpl, window, tools=req.tools, think=think_flag(think),
                                   think_level=think_level(think))
        if len(await client.tokenize(text, add_special=True)) <= num_ctx:
            return text
    return text
