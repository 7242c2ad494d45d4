"""The Anthropic-compatible API through the official ``anthropic`` SDK: the real server, engine and bundled model.

This SDK no longer takes ``temperature`` as an argument, so greedy decoding goes in ``extra_body``. The last section
drives ``/v1/messages`` with a scripted engine for what the bundled model cannot do: thinking, tool use, failures.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from corral.api import anthropic as ant
from corral.errors import InferenceError
from corral.inference.service import Final, Piece
from tests.conftest import MODEL, ServerProcess
from tests.scripted import CALL, FAKE_MODEL, ScriptedService

GREEDY: dict[str, Any] = {"extra_body": {"temperature": 0}}
ASK = [{"role": "user", "content": "Why is the sky blue?"}]
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0, timeout=120)


@pytest.mark.e2e
def test_message_non_streaming_shape(client: anthropic.Anthropic) -> None:
    m = client.messages.create(model=MODEL, max_tokens=12, messages=ASK, **GREEDY)
    assert m.id.startswith("msg_") and len(m.id) == 28
    assert (m.type, m.role, m.model) == ("message", "assistant", MODEL)
    assert m.stop_reason == "max_tokens" and m.stop_sequence is None
    [block] = m.content
    assert block.type == "text" and block.text.strip()
    assert m.usage.output_tokens == 12 and m.usage.input_tokens >= 1


@pytest.mark.e2e
def test_message_streaming_matches_non_streaming(client: anthropic.Anthropic) -> None:
    whole = client.messages.create(model=MODEL, max_tokens=16, messages=ASK, **GREEDY)
    with client.messages.stream(model=MODEL, max_tokens=16, messages=ASK, **GREEDY) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert whole.content[0].type == "text"
    assert text == whole.content[0].text
    assert final.id.startswith("msg_") and final.stop_reason == "max_tokens"
    assert final.content[0].type == "text" and final.content[0].text == text
    assert final.usage.output_tokens == 16 and final.usage.input_tokens >= 1


@pytest.mark.e2e
def test_raw_event_sequence(client: anthropic.Anthropic, server: ServerProcess) -> None:
    events = list(client.messages.create(model=MODEL, max_tokens=4, messages=ASK, stream=True, **GREEDY))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(kinds[2:-3]) == {"content_block_delta"}
    assert events[0].type == "message_start" and events[0].message.content == []
    assert events[0].message.usage.input_tokens > 0
    # On the wire, a ping follows message_start (the SDK skips it) and every event names itself twice.
    body = {"model": MODEL, "max_tokens": 2, "messages": ASK, "stream": True, "temperature": 0}
    with server.client() as http, http.stream("POST", "/v1/messages", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    frames = [f.split("\n") for f in raw.split("\n\n") if f]
    names = [f[0].removeprefix("event: ") for f in frames]
    assert names[:2] == ["message_start", "ping"]
    assert all(json.loads(f[1].removeprefix("data: "))["type"] == n for f, n in zip(frames, names, strict=True))


@pytest.mark.e2e
def test_stop_sequences_end_the_answer(client: anthropic.Anthropic) -> None:
    full = client.messages.create(model=MODEL, max_tokens=30, messages=ASK, **GREEDY)
    assert full.content[0].type == "text"
    text = full.content[0].text
    words = text.split()
    assert len(words) > 4
    cut = client.messages.create(model=MODEL, max_tokens=30, messages=ASK, stop_sequences=[words[3]], **GREEDY)
    assert cut.content[0].type == "text"
    assert cut.content[0].text == text[:text.index(words[3])]
    # Ollama reports end_turn here; stop_sequence once the engine says which stop string ended generation.
    assert cut.stop_reason in ("end_turn", "stop_sequence")


@pytest.mark.e2e
def test_system_as_string_or_blocks(client: anthropic.Anthropic) -> None:
    system = "You answer only in French."
    as_string = client.messages.create(model=MODEL, max_tokens=10, messages=ASK, system=system, **GREEDY)
    as_blocks = client.messages.create(model=MODEL, max_tokens=10, messages=ASK, **GREEDY,
                                       system=[{"type": "text", "text": system}])
    default = client.messages.create(model=MODEL, max_tokens=10, messages=ASK, **GREEDY)
    assert as_string.content == as_blocks.content
    assert as_string.content != default.content


@pytest.mark.e2e
def test_history_with_blocks_tool_use_and_results(client: anthropic.Anthropic) -> None:
    m = client.messages.create(model=MODEL, max_tokens=4, **GREEDY, messages=[
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18C"}]},
            {"type": "text", "text": "So?"}]},
    ])
    assert m.stop_reason == "max_tokens"


@pytest.mark.e2e
def test_thinking_request_is_relaxed_for_a_model_that_cannot_think(client: anthropic.Anthropic) -> None:
    m = client.messages.create(model=MODEL, max_tokens=4, messages=ASK, **GREEDY,
                               thinking={"type": "enabled", "budget_tokens": 1024})
    assert [b.type for b in m.content] == ["text"]


@pytest.mark.e2e
def test_tool_choice_none_drops_the_tools(client: anthropic.Anthropic) -> None:
    m = client.messages.create(model=MODEL, max_tokens=3, messages=ASK, tool_choice={"type": "none"}, **GREEDY,
                               tools=[{"name": "f", "input_schema": {"type": "object", "properties": {}}}])
    assert m.stop_reason == "max_tokens"


# -- errors ----------------------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_unknown_model_is_not_found(client: anthropic.Anthropic) -> None:
    for stream in (False, True):
        with pytest.raises(anthropic.NotFoundError) as info:
            client.messages.create(model="no-such-model", max_tokens=5, messages=ASK, stream=stream)
        body = info.value.body
        assert isinstance(body, dict) and body["type"] == "error"
        assert body["error"] == {"type": "not_found_error", "message": "model 'no-such-model' not found"}
        assert body["request_id"].startswith("req_")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_tokens": 0}, "max_tokens is required and must be positive"),
    ({"messages": []}, "messages is required"),
    ({"model": ""}, "model is required"),
    ({"tools": [{"name": "f", "input_schema": {"type": "object"}}]}, f'"{MODEL}" does not support tools'),
    ({"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]}]},
     f'"{MODEL}" does not support images'),
    ({"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]}]},
     "invalid image source type: url. Only base64 images are supported."),
    ({"messages": [{"role": "assistant", "content": [{"type": "tool_use", "name": "f", "input": {}}]}]},
     "tool_use block missing required 'id' field"),
])
@pytest.mark.e2e
def test_bad_requests_are_400_in_anthropic_shape(client: anthropic.Anthropic, kwargs: dict[str, Any],
                                                 message: str) -> None:
    args: dict[str, Any] = {"model": MODEL, "max_tokens": 5, "messages": ASK, **kwargs}
    for stream in (False, True):
        with pytest.raises(anthropic.BadRequestError) as info:
            client.messages.create(**args, stream=stream)
        body = info.value.body
        assert isinstance(body, dict)
        assert body["error"] == {"type": "invalid_request_error", "message": message}


@pytest.mark.e2e
def test_malformed_bodies_are_400_in_anthropic_shape(server: ServerProcess) -> None:
    with server.client() as http:
        for content, message in ((b"{nope", "invalid JSON"), (b"", "missing request body"),
                                 (b'{"model":"m","max_tokens":5,"messages":[{"role":"user","content":7}]}',
                                  "messages.0.content")):
            r = http.post("/v1/messages", content=content, headers={"anthropic-version": "2023-06-01"})
            assert r.status_code == 400
            assert r.json()["type"] == "error"
            assert r.json()["error"]["type"] == "invalid_request_error"
            assert r.json()["error"]["message"].startswith(message)


@pytest.mark.e2e
def test_openapi_documents_messages(server: ServerProcess) -> None:
    with server.client() as http:
        spec = http.get("/openapi.json").json()
    assert "/v1/messages" in spec["paths"]
    assert {"MessagesRequest", "MessagesResponse"} <= set(spec["components"]["schemas"])


# -- a scripted engine: thinking, tool use, failures -------------------------------------------------------------------


TOOL = {"name": "weather", "description": "Weather now", "input_schema": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[anthropic.Anthropic, ScriptedService]]:
    monkeypatch.setattr(ant, "resolve_model", lambda store, name: FAKE_MODEL)
    engine = ScriptedService()
    app = FastAPI()
    app.state.store = None
    app.state.service = engine
    app.include_router(ant.router)
    with TestClient(app) as http:
        yield anthropic.Anthropic(base_url="http://testserver", api_key="x", http_client=http, max_retries=0), engine


def test_thinking_text_and_tool_use_non_streaming(scripted: tuple[anthropic.Anthropic, ScriptedService]) -> None:
    client, engine = scripted
    engine.items = [Piece(thinking="Need data."), Piece(content="Checking."), Piece(tool_calls=[CALL]),
                    Final(done_reason="stop", prompt_eval_count=20, eval_count=6)]
    m = client.messages.create(model="fake", max_tokens=50, messages=ASK, tools=[TOOL],
                               thinking={"type": "enabled", "budget_tokens": 2000})
    assert [b.type for b in m.content] == ["thinking", "text", "tool_use"]
    thinking, text, use = m.content
    assert thinking.type == "thinking" and thinking.thinking == "Need data."
    assert text.type == "text" and text.text == "Checking."
    assert use.type == "tool_use" and (use.id, use.name, use.input) == ("call_abc", "weather", {"city": "Paris"})
    assert m.stop_reason == "tool_use"
    assert (m.usage.input_tokens, m.usage.output_tokens) == (20, 6)
    req = engine.requests[0]
    assert req.think is True
    assert req.options == {"num_predict": 50}
    assert req.tools == [{"type": "function", "function": {
        "name": "weather", "description": "Weather now", "parameters": TOOL["input_schema"]}}]


def test_thinking_text_and_tool_use_streaming(scripted: tuple[anthropic.Anthropic, ScriptedService]) -> None:
    client, engine = scripted
    engine.items = [Piece(thinking="Need"), Piece(thinking=" data."), Piece(content="Checking"),
                    Piece(content="."), Piece(tool_calls=[CALL]),
                    Final(done_reason="stop", prompt_eval_count=20, eval_count=6)]
    with client.messages.stream(model="fake", max_tokens=50, messages=ASK, tools=[TOOL]) as stream:
        events = list(stream)
        final = stream.get_final_message()
    raw = [(e.type, getattr(e, "index", None)) for e in events
           if e.type in ("message_start", "content_block_start", "content_block_stop", "message_delta",
                         "message_stop")]
    assert raw == [("message_start", None), ("content_block_start", 0), ("content_block_stop", 0),
                   ("content_block_start", 1), ("content_block_stop", 1), ("content_block_start", 2),
                   ("content_block_stop", 2), ("message_delta", None), ("message_stop", None)]
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use"]
    thinking, text, use = final.content
    assert thinking.type == "thinking" and thinking.thinking == "Need data."
    assert text.type == "text" and text.text == "Checking."
    assert use.type == "tool_use" and use.input == {"city": "Paris"} and use.id == "call_abc"
    assert final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (20, 6)


def test_request_mapping_to_the_engine(scripted: tuple[anthropic.Anthropic, ScriptedService]) -> None:
    client, engine = scripted
    engine.items = [Final(done_reason="length")]
    m = client.messages.create(
        model="fake", max_tokens=9, stop_sequences=["END"], system=[{"type": "text", "text": "A."},
                                                                     {"type": "text", "text": "B."}],
        output_config={"effort": "xhigh"}, extra_body={"temperature": 0.3, "top_p": 0.8, "top_k": 5},
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image", "source": {
                "type": "base64", "media_type": "image/png", "data": PNG}}]},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                                              {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "one"},
                                         {"type": "text", "text": "next"}]},
        ],
    )
    assert m.stop_reason == "max_tokens" and m.content == []
    req = engine.requests[0]
    assert req.options == {"num_predict": 9, "temperature": 0.3, "top_p": 0.8, "top_k": 5, "stop": ["END"]}
    assert req.think == "high"
    assert req.messages == [
        {"role": "system", "content": "A.\n\nB."},
        {"role": "user", "content": "look\n\n[img]", "images": [PNG]},  # the image after the text, where it was
        {"role": "assistant", "content": "", "tool_calls": [{"id": "t1", "function": {"name": "f",
                                                                                     "arguments": {"a": 1}}}],
         "thinking": "hm"},
        {"role": "tool", "content": "one", "tool_call_id": "t1", "tool_name": "f"},
        {"role": "user", "content": "next"},
    ]


def test_failure_after_streaming_began_is_an_error_event(scripted: tuple[anthropic.Anthropic, ScriptedService]) -> None:
    client, engine = scripted
    engine.items = [Piece(content="partial"), InferenceError("llama-server process no longer running: -9")]
    with (pytest.raises(anthropic.APIStatusError, match="no longer running"),
          client.messages.stream(model="fake", max_tokens=5, messages=ASK) as stream):
        for _ in stream:
            pass


def test_failure_before_streaming_keeps_its_status(scripted: tuple[anthropic.Anthropic, ScriptedService]) -> None:
    client, engine = scripted
    engine.items = [InferenceError("failed to load model")]
    with pytest.raises(anthropic.InternalServerError) as info:
        client.messages.create(model="fake", max_tokens=5, messages=ASK, stream=True)
    body = info.value.body
    assert isinstance(body, dict) and body["error"] == {"type": "api_error", "message": "failed to load model"}


def test_tool_choice_mapping_to_the_engine(scripted: tuple[anthropic.Anthropic, ScriptedService]) -> None:
    client, engine = scripted
    engine.items = [Final(done_reason="stop")]
    cases: list[tuple[Any, tuple[Any, ...]]] = [
        ({"type": "auto", "disable_parallel_tool_use": True}, ("auto", None, False)),
        ({"type": "any"}, ("required", None, True)),
        ({"type": "tool", "name": "weather"}, ("required", ["weather"], True)),
    ]
    for choice, fields in cases:
        client.messages.create(model="fake", max_tokens=5, messages=ASK, tools=[TOOL], tool_choice=choice)
        req = engine.requests[-1]
        assert req.tools is not None and req.tool_call_deltas is False
        assert (req.tool_choice, req.tool_choice_names, req.parallel_tool_calls) == fields
    with pytest.raises(anthropic.BadRequestError, match=r"tool_choice\.name is required"):
        client.messages.create(model="fake", max_tokens=5, messages=ASK, tools=[TOOL],
                               tool_choice={"type": "tool"})  # type: ignore[typeddict-item]
