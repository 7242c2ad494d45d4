"""Request building: what one generation sends to the engine, on the rendered or the native path.

Two prompt paths, as Ollama has them. Rendered: the model has a Go ``TEMPLATE`` (or the request is raw, or a
generate without any template): Corral renders the prompt, fits the history into ``num_ctx`` and sends text to the
engine's ``/completion``. Native: a chat with no Go template: the engine applies the GGUF's Jinja template through
``/v1/chat/completions`` and parses tool calls and reasoning itself. A forced tool call (``tool_choice``) always
completes text directly after the call's opening tag, so the engine's grammar shapes the call from its first byte.
Images go where each path's rule puts them (:mod:`.images`): markers in the rendered text, content parts on the
native path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from corral.errors import InferenceError, RequestError, TemplateError
from corral.inference import images, options
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


@dataclass(frozen=True, slots=True)
class EngineCall:
    """One request to the engine and what reading its stream needs."""

    endpoint: str  # COMPLETION or CHAT
    body: dict[str, Any]
    prompt: str  # the text sent to COMPLETION, without its images ("" on CHAT)
    template: Template | None  # parses thinking and tool calls out of rendered-path output; None: pass text through
    think: bool  # whether the output may open with thinking
    forced_names: list[str] | None


def settle(req: InferenceRequest, merged: dict[str, Any], num_ctx: int) -> Settings:
    """Sampling fields, template and thinking for a request; raises RequestError for a bad format, template or
    image."""
    images.check_request(req)
    sampling = options.engine_sampling(merged, num_ctx)
    schema = engine_schema(req.format)
    if schema is not None:
        sampling["json_schema"] = schema
    template = req.model.go_template() if req.template is None else template_override(req.template)
    think = req.think
    forced_names = None
    if req.forces_call:
        # One call by construction: the schema replaces any response format, and thinking is skipped, since the
        # call must follow the prompt directly.
        sampling["json_schema"] = call_schema(req.tools or [], req.tool_choice_names)
        sampling.pop("stop", None)  # a stop string must not cut the call's JSON short
        think = False
        forced_names = _forced_names(req)
    elif think is None and "thinking" in req.model.capabilities():
        think = True  # Ollama thinks by default when the model can
    return Settings(sampling=sampling, template=template, think=think, forced_names=forced_names)


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
        native, text = await _native_images(client, req, text)
        return EngineCall(COMPLETION, _completion_body(native, settings), text, None, think, settings.forced_names)
    placement = images.Placement() if has_images(req) else None
    try:
        text = await _render(client, req, tmpl, settings.think, num_ctx, placement)
    except TemplateError as exc:
        raise InferenceError(f"template error: {exc}") from exc
    if forced and tmpl is not None:
        text += tool_call_prefix(tmpl)
    prompt: str | dict[str, Any] = text
    if placement is not None:
        prompt, text = placement.engine_prompt(text, await images.media_marker(client))
    parse_with = None if req.raw else tmpl
    return EngineCall(COMPLETION, _completion_body(prompt, settings), text, parse_with, think, settings.forced_names)


def has_images(req: InferenceRequest) -> bool:
    return bool(req.images) or any(m.get("images") for m in req.messages or ())


async def _native_images(client: RunnerClient, req: InferenceRequest, text: str) -> tuple[str | dict[str, Any], str]:
    """A prompt from the engine's own template carries its media markers, one per image part in message order."""
    if not has_images(req):
        return text, text
    marker = await images.media_marker(client)
    data = [images.clean(i) for m in with_model_messages(req) for i in m.get("images") or ()]
    return {"prompt_string": text, "multimodal_data": data}, text.replace(marker, "")


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
    """A native (Ollama) message in the engine's OpenAI shape: arguments as JSON text, thinking as reasoning, images
    as content parts where Ollama's rule places them."""
    out: dict[str, Any] = {"role": m.get("role", "user"), "content": m.get("content", "")}
    if m.get("images"):
        out["content"] = images.content_parts(str(m.get("content") or ""), m["images"])
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


def _forced_names(req: InferenceRequest) -> list[str]:
    names = [n for n in (tool_name(t) for t in req.tools or ()) if n is not None]
    if req.tool_choice_names is not None:
        names = [n for n in names if n in req.tool_choice_names]
    return names


def _completion_body(prompt: str | dict[str, Any], settings: Settings) -> dict[str, Any]:
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
    flag = think_flag(settings.think)
    if flag is not None:
        body["chat_template_kwargs"] = {"enable_thinking": flag}
    return body


# -- the rendered path: Corral renders the Go template, the engine completes raw text -------------------------------


async def _render(client: RunnerClient, req: InferenceRequest, tmpl: Template | None, think: bool | str | None,
                  num_ctx: int, placement: images.Placement | None = None) -> str:
    """The rendered prompt; with ``placement``, each image is a tag of it where the image goes."""
    model = req.model
    tag = placement.tag if placement is not None else None
    if req.raw:
        return _tagged(req.prompt or "", req.images, placement)
    if tmpl is None:
        tmpl = template_override(prompts.DEFAULT_TEMPLATE)
    flag, level = think_flag(think), think_level(think)
    if req.messages is None:
        system = req.system if req.system is not None else model.system
        # A legacy ``context`` carries the earlier turns, so the model's MESSAGE layer is not repeated.
        history = model.messages if not req.context else []
        if req.template is not None and not req.suffix:
            msgs = [*([{"role": "system", "content": system}] if system else []), *history,
                    {"role": "user", "content": _tagged(req.prompt or "", req.images, placement)}]
            text = prompts.execute_values(tmpl, messages=msgs, think=flag, think_level=level)
        elif req.suffix:  # fill-in-the-middle renders .Prompt alone: the images go in front of it
            text = prompts.render_generate(tmpl, prompt=_tagged(req.prompt or "", req.images, placement),
                                           system=system, suffix=req.suffix, think=flag, think_level=level)
        else:
            text = prompts.render_generate(tmpl, prompt=req.prompt or "", system=system, messages=history,
                                           images=req.images, think=flag, think_level=level, image_tag=tag)
        if req.context:
            text = await client.detokenize(req.context) + text
        return text
    messages = with_model_messages(req)
    per_image = images.tokens_per_image(model.projector_info) if placement is not None else 0
    pictures = sum(len(m.get("images") or ()) for m in messages) * per_image
    # Bytes bound tokens from above for byte-level tokenizers: most prompts skip tokenizing altogether. The
    # messages' own text is a lower bound of the prompt's bytes, so a long history is not even rendered whole. An
    # image counts as the tokens its projector makes of it.
    if sum(len(str(m.get("content") or "").encode()) for m in messages) + 2 + pictures <= num_ctx:
        text = prompts.render_chat(tmpl, messages, tools=req.tools, think=flag, think_level=level, image_tag=tag)
        if len(text.encode()) + 2 + _image_tokens(text, placement, per_image) <= num_ctx:
            return text
    return await _fit_history(client, tmpl, messages, req, think, num_ctx, placement, per_image)


def _tagged(content: str, pictures: list[str], placement: images.Placement | None) -> str:
    """Text with the tags of its images, by Ollama's rule (an ``[img]`` placeholder each, else in front)."""
    if placement is None or not pictures:
        return content
    return "".join(p if isinstance(p, str) else placement.tag(pictures[p])
                   for p in images.split_content(content, len(pictures)))


def _image_tokens(text: str, placement: images.Placement | None, per_image: int) -> int:
    return placement.count(text) * per_image if placement is not None else 0


async def _fit_history(client: RunnerClient, tmpl: Template, messages: list[dict[str, Any]], req: InferenceRequest,
                       think: bool | str | None, num_ctx: int, placement: images.Placement | None = None,
                       per_image: int = 0) -> str:
    """The prompt of the longest tail of the chat that fits num_ctx: system messages always stay, then as many of
    the latest other messages as fit; the last message stays even when it alone is too long, as in Ollama. An image
    counts as ``per_image`` tokens and leaves with its message (as in Ollama).

    The window grows from the end by doubling, then a binary search between the last size that fit and the first
    that did not: each try renders and tokenizes only its window, which is at most twice the prompt that fits, so
    the cost follows ``num_ctx``, not the length of the history (10,000 messages cost what 100 do)."""
    system = [m for m in messages if m.get("role") == "system"]
    rest = [m for m in messages if m.get("role") != "system"]
    tag = placement.tag if placement is not None else None

    async def fits(count: int) -> tuple[bool, str]:
        text = prompts.render_chat(tmpl, system + rest[len(rest) - count:], tools=req.tools,
                                   think=think_flag(think), think_level=think_level(think), image_tag=tag)
        pictures = _image_tokens(text, placement, per_image)
        if len(text.encode()) + 2 + pictures <= num_ctx:
            return True, text
        plain = placement.strip(text) if placement is not None else text
        return len(await client.tokenize(plain, add_special=True)) + pictures <= num_ctx, text

    ok, best = await fits(min(1, len(rest)))
    if not ok or len(rest) <= 1:
        return best
    good, bad = 1, len(rest) + 1
    size = 2
    while size < bad:
        ok, text = await fits(min(size, len(rest)))
        if not ok:
            bad = min(size, len(rest))
            break
        good, best = min(size, len(rest)), text
        if good == len(rest):
            return best
        size *= 2
    while bad - good > 1:
        middle = (good + bad) // 2
        ok, text = await fits(middle)
        if ok:
            good, best = middle, text
        else:
            bad = middle
    return best
