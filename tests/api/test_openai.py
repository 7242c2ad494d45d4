"""The OpenAI-compatible API through the official ``openai`` SDK: the real server, engine and bundled model.

SmolLM2-135M answers poorly, so these tests check shapes and behaviour (finish reasons, usage, stops, seeds, JSON
mode, errors), not content. The last section drives the routes with a scripted engine to cover what the bundled
model cannot do: tool calls, reasoning, and a failure in mid-stream.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from corral.api import openai as oai
from corral.errors import InferenceError
from corral.inference.service import Final, Piece
from tests.conftest import MODEL, ServerProcess
from tests.scripted import CALL, FAKE_MODEL, ScriptedService

GREEDY: dict[str, Any] = {"temperature": 0}
ASK = [{"role": "user", "content": "Why is the sky blue?"}]
PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=120)


# -- chat completions --------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_chat_non_streaming_shape_and_usage(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=12, **GREEDY)
    assert r.id.startswith("chatcmpl-")
    assert r.object == "chat.completion"
    assert r.model == MODEL
    assert r.system_fingerprint == "fp_ollama"
    assert r.created > 1_600_000_000
    choice = r.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content and choice.message.content.strip()
    assert choice.message.tool_calls is None
    assert choice.finish_reason == "length"
    assert r.usage is not None
    assert r.usage.completion_tokens == 12
    assert r.usage.prompt_tokens >= 1
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


@pytest.mark.e2e
def test_chat_streaming_matches_non_streaming_and_reports_usage(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=16, **GREEDY)
    chunks = list(client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=16, stream=True,
                                                 stream_options={"include_usage": True}, **GREEDY))
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert len({c.created for c in chunks}) == 1
    assert all(c.object == "chat.completion.chunk" and c.system_fingerprint == "fp_ollama" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in chunks[1:] if c.choices)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["length"]
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == 16
    assert last.usage.total_tokens == last.usage.prompt_tokens + 16


@pytest.mark.e2e
def test_chat_stream_without_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=4, stream=True, **GREEDY))
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"


@pytest.mark.e2e
def test_raw_sse_framing(server: ServerProcess) -> None:
    body = {"model": MODEL, "messages": ASK, "max_tokens": 3, "stream": True, **GREEDY}
    with server.client() as http, http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    final = json.loads(events[-2][len("data: "):])
    assert final["choices"][0]["delta"] == {} and final["choices"][0]["finish_reason"] == "length"


@pytest.mark.e2e
def test_stop_sequence_ends_the_answer(client: openai.OpenAI) -> None:
    full = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=30, **GREEDY)
    text = full.choices[0].message.content or ""
    words = text.split()
    assert len(words) > 4
    stop = words[3]
    cut = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=30, stop=stop, **GREEDY)
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == text[:text.index(stop)]
    listed = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=30, stop=["\u2603", stop],
                                            **GREEDY)
    assert listed.choices[0].message.content == cut.choices[0].message.content


@pytest.mark.e2e
def test_max_completion_tokens_limits_like_max_tokens(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, messages=ASK, max_completion_tokens=5, **GREEDY)
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None and r.usage.completion_tokens == 5


@pytest.mark.e2e
def test_seed_reproducibility_at_full_temperature(client: openai.OpenAI) -> None:
    msgs = [{"role": "user", "content": "Tell me a story."}]
    a, b = (client.chat.completions.create(model=MODEL, messages=msgs, seed=7, max_tokens=16, temperature=1.0)
            for _ in range(2))
    assert a.choices[0].message.content == b.choices[0].message.content


@pytest.mark.e2e
def test_json_object_response_format_parses(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model=MODEL, max_tokens=120, response_format={"type": "json_object"}, **GREEDY,
        messages=[{"role": "user", "content": "Give me a JSON object describing a cat with keys name and age."}],
    )
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r.choices[0].message.content or ""), dict)


@pytest.mark.e2e
def test_json_schema_response_format_follows_the_schema(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    r = client.chat.completions.create(
        model=MODEL, max_tokens=80, messages=[{"role": "user", "content": "Describe a cat."}], **GREEDY,
        response_format={"type": "json_schema", "json_schema": {"name": "cat", "schema": schema}},
    )
    value = json.loads(r.choices[0].message.content or "")
    assert set(value) == {"name", "age"}
    assert isinstance(value["name"], str) and isinstance(value["age"], int)


@pytest.mark.e2e
def test_content_parts_history_and_tool_messages_are_accepted(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, max_tokens=4, **GREEDY, messages=[
        {"role": "system", "content": [{"type": "text", "text": "You are terse."}]},
        {"role": "user", "content": [{"type": "text", "text": "What is the weather"},
                                     {"type": "text", "text": "in Paris?"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"},
        {"role": "user", "content": "So?"},
    ])
    assert r.choices[0].finish_reason == "length"


@pytest.mark.e2e
def test_tool_choice_none_drops_the_tools(client: openai.OpenAI) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    r = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=3, tools=[tool], tool_choice="none",
                                       **GREEDY)
    assert r.choices[0].finish_reason == "length"


@pytest.mark.e2e
def test_reasoning_effort_none_is_accepted(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=3, reasoning_effort="none", **GREEDY)
    assert r.choices[0].message.content


# -- chat errors ---------------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_unknown_model_is_not_found(client: openai.OpenAI) -> None:
    for stream in (False, True):
        with pytest.raises(openai.NotFoundError) as info:
            client.chat.completions.create(model="no-such-model", messages=ASK, stream=stream)
        assert info.value.status_code == 404
        assert info.value.body == {"message": "model 'no-such-model' not found", "type": "not_found_error",
                                   "param": None, "code": None}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"messages": []}, "[] is too short - 'messages'"),
    ({"messages": ASK, "model": ""}, "model is required"),
    ({"messages": [{"role": "user", "content": [{"type": "video", "video": "x"}]}]}, "invalid message format"),
    ({"messages": [{"role": "user"}]}, "invalid message content type: <nil>"),
    ({"messages": [{"role": "assistant", "content": "", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}]},
     "invalid tool call arguments"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]},
     "image URLs are not currently supported, please use base64 encoded data instead"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:text/plain;base64,"
                                                                                      "R0lG"}}]}]},
     "invalid image input"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url",
                                                  "image_url": {"url": "data:image/png;base64," + PNG}}]}]},
     f'"{MODEL}" does not support images'),
    ({"messages": ASK, "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]},
     f'"{MODEL}" does not support tools'),
    ({"messages": ASK, "reasoning_effort": "high"}, f'"{MODEL}" does not support thinking'),
    ({"messages": ASK, "reasoning_effort": "extreme"}, "invalid reasoning value"),
])
@pytest.mark.e2e
def test_bad_requests_are_400_in_openai_shape(client: openai.OpenAI, kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"model": MODEL, **kwargs}
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(**args, stream=stream)
        assert info.value.status_code == 400
        body = info.value.body
        assert isinstance(body, dict)
        assert body["type"] == "invalid_request_error" and body["param"] is None and body["code"] is None
        assert body["message"].startswith(message)


@pytest.mark.parametrize(("content", "message"), [
    (b"{not json", "invalid JSON"),
    (b"", "missing request body"),
    (json.dumps({"model": MODEL, "messages": "hi"}).encode(), "messages: "),
    (json.dumps({"model": MODEL, "messages": ASK, "temperature": "hot"}).encode(), "temperature: "),
])
@pytest.mark.e2e
def test_malformed_bodies_are_400_in_openai_shape(server: ServerProcess, content: bytes, message: str) -> None:
    with server.client() as http:
        r = http.post("/v1/chat/completions", content=content)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith(message)


# -- legacy completions ----------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_completions_non_streaming_and_streaming(client: openai.OpenAI) -> None:
    prompt = "Why is the sky blue?"
    whole = client.completions.create(model=MODEL, prompt=prompt, max_tokens=10, **GREEDY)
    assert whole.id.startswith("cmpl-") and whole.object == "text_completion"
    assert whole.system_fingerprint == "fp_ollama" and whole.model == MODEL
    assert whole.choices[0].finish_reason == "length" and whole.choices[0].text
    assert whole.usage is not None and whole.usage.completion_tokens == 10
    chunks = list(client.completions.create(model=MODEL, prompt=prompt, max_tokens=10, stream=True,
                                            stream_options={"include_usage": True}, **GREEDY))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 10


@pytest.mark.e2e
def test_completions_stop_and_seed(client: openai.OpenAI) -> None:
    full = client.completions.create(model=MODEL, prompt="Why is the sky blue?", max_tokens=30, **GREEDY)
    words = full.choices[0].text.split()
    assert len(words) > 4
    cut = client.completions.create(model=MODEL, prompt="Why is the sky blue?", max_tokens=30, stop=[words[3]],
                                    **GREEDY)
    assert cut.choices[0].finish_reason == "stop"
    assert words[3] not in cut.choices[0].text
    a, b = (client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=12, seed=3,
                                      temperature=1.0) for _ in range(2))
    assert a.choices[0].text == b.choices[0].text


@pytest.mark.e2e
def test_completions_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-model", prompt="hi")
    with pytest.raises(openai.BadRequestError, match="does not support insert"):
        client.completions.create(model=MODEL, prompt="def f(", suffix="return 1")
    with pytest.raises(openai.BadRequestError, match="invalid type for 'stop' field"):
        client.completions.create(model=MODEL, prompt="hi", stop=[1, 2])  # type: ignore[list-item]
    with pytest.raises(openai.BadRequestError, match="prompt must be a single string"):
        client.completions.create(model=MODEL, prompt=["a", "b"])


# -- models -------------------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    models = list(client.models.list())
    entry = next(m for m in models if m.id == MODEL)
    assert entry.object == "model" and entry.owned_by == "library" and entry.created > 1_600_000_000
    one = client.models.retrieve(MODEL)
    assert (one.id, one.object, one.owned_by, one.created) == (MODEL, "model", "library", entry.created)
    namespaced = client.models.retrieve("library/" + MODEL)  # Ollama's route takes one path segment only
    assert (namespaced.id, namespaced.owned_by) == ("library/" + MODEL, "library")
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("no-such-model")
    assert info.value.body == {"message": "model 'no-such-model' not found", "type": "not_found_error",
                               "param": None, "code": None}


@pytest.mark.e2e
def test_openapi_documents_the_v1_routes(server: ServerProcess) -> None:
    with server.client() as http:
        spec = http.get("/openapi.json").json()
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/models/{model}"):
        assert path in spec["paths"]
    schemas = spec["components"]["schemas"]
    assert {"ChatCompletionRequest", "ChatCompletion", "CompletionRequest", "Completion", "ModelList"} <= set(schemas)
    assert "max_completion_tokens" in schemas["ChatCompletionRequest"]["properties"]


# -- a scripted engine: tool calls, reasoning, failures --------------------------------------------------------------




@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[openai.OpenAI, ScriptedService]]:
    monkeypatch.setattr(oai, "resolve_model", lambda store, name: FAKE_MODEL)
    engine = ScriptedService([])
    app = FastAPI()
    app.state.store = None
    app.state.service = engine
    app.include_router(oai.router)
    with TestClient(app) as http:
        yield openai.OpenAI(base_url="http://testserver/v1", api_key="x", http_client=http, max_retries=0), engine


def test_tool_calls_and_reasoning_non_streaming(scripted: tuple[openai.OpenAI, ScriptedService]) -> None:
    client, engine = scripted
    engine.items = [Piece(thinking="Let me look."), Piece(tool_calls=[CALL]),
                    Final(done_reason="stop", prompt_eval_count=9, eval_count=4)]
    tool = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
    r = client.chat.completions.create(model="fake", messages=ASK, tools=[tool], reasoning_effort="high")
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.model_extra and choice.message.model_extra["reasoning"] == "Let me look."
    [call] = choice.message.tool_calls or []
    assert call.id == "call_abc" and call.type == "function"
    assert call.function.name == "weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert r.usage is not None and (r.usage.prompt_tokens, r.usage.completion_tokens) == (9, 4)
    req = engine.requests[0]
    assert req.think == "high"
    assert req.tools == [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    assert req.options == {"temperature": 1.0, "top_p": 1.0}  # OpenAI's defaults, as Ollama sends them


def test_tool_call_deltas_and_reasoning_chunks_when_streaming(scripted: tuple[openai.OpenAI, ScriptedService]) -> None:
    client, engine = scripted
    engine.items = [Piece(thinking="Hmm", content="Checking"), Piece(tool_calls=[{"function": {
        "name": "weather", "arguments": {}}}]), Final(done_reason="stop", prompt_eval_count=3, eval_count=2)]
    chunks = list(client.chat.completions.create(model="fake", messages=ASK, stream=True))
    deltas = [c.choices[0].delta for c in chunks]
    assert deltas[0].role == "assistant" and (deltas[0].model_extra or {}).get("reasoning") == "Hmm"
    assert deltas[0].content is None
    assert deltas[1].content == "Checking" and deltas[1].role is None
    [call] = deltas[2].tool_calls or []
    assert call.index == 0 and call.id and call.id.startswith("call_")
    assert call.function is not None and call.function.name == "weather" and call.function.arguments == "{}"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_request_mapping_to_the_engine(scripted: tuple[openai.OpenAI, ScriptedService]) -> None:
    client, engine = scripted
    engine.items = [Final(done_reason="stop")]
    client.chat.completions.create(
        model="fake", max_tokens=7, temperature=0.2, top_p=0.5, seed=11, frequency_penalty=0.1,
        presence_penalty=0.3, stop="END", response_format={"type": "json_object"}, reasoning_effort="none",
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"},
                                         {"type": "image_url", "image_url": "data:image/png;base64," + PNG}]},
            {"role": "assistant", "content": "", "reasoning": "thought",
             "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
        ],
    )
    req = engine.requests[0]
    assert req.options == {"temperature": 0.2, "top_p": 0.5, "stop": ["END"], "num_predict": 7, "seed": 11,
                           "frequency_penalty": 0.1, "presence_penalty": 0.3}
    assert req.format == "json" and req.think is False and req.tools is None
    assert req.messages == [
        {"role": "user", "content": "a\n\nb\n\n[img]", "images": [PNG]},  # the image after the texts, where it was
        {"role": "assistant", "content": "", "thinking": "thought",
         "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": {}}}]},
        {"role": "tool", "content": "42", "tool_call_id": "c1", "tool_name": "f"},
    ]


def test_failure_after_streaming_began_is_an_error_event(scripted: tuple[openai.OpenAI, ScriptedService]) -> None:
    client, engine = scripted
    engine.items = [Piece(content="partial"), InferenceError("llama-server process no longer running: -9")]
    stream = client.chat.completions.create(model="fake", messages=ASK, stream=True)
    with pytest.raises(openai.APIError, match="no longer running"):
        for _ in stream:
            pass


def test_failure_before_streaming_keeps_its_status(scripted: tuple[openai.OpenAI, ScriptedService]) -> None:
    client, engine = scripted
    engine.items = [InferenceError("failed to load model")]
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="fake", messages=ASK, stream=True)
    assert info.value.body == {"message": "failed to load model", "type": "api_error", "param": None, "code": None}


@pytest.mark.e2e
def test_embeddings_float_and_base64(client: openai.OpenAI) -> None:
    r = client.embeddings.create(model="all-minilm", input=["How do I bake bread?", "A bread recipe, please."],
                                 encoding_format="float")
    assert [d.index for d in r.data] == [0, 1] and len(r.data[0].embedding) == 384
    assert abs(sum(x * x for x in r.data[0].embedding) - 1.0) < 1e-5
    assert r.usage.prompt_tokens > 5
    b64 = client.embeddings.create(model="all-minilm", input="How do I bake bread?")  # the SDK asks for base64
    assert b64.data[0].embedding == pytest.approx(r.data[0].embedding, abs=1e-6)
    short = client.embeddings.create(model="all-minilm", input="bread", dimensions=8, encoding_format="float")
    assert len(short.data[0].embedding) == 8


@pytest.mark.e2e
def test_embeddings_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="nope", input="x")
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="all-minilm", input="")


def test_tool_choice_mapping_to_the_engine(scripted: tuple[openai.OpenAI, ScriptedService]) -> None:
    client, engine = scripted
    engine.items = [Final(done_reason="stop")]
    tools: Any = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}} for n in "ab"]
    client.chat.completions.create(
        model="fake", messages=ASK, tools=tools, parallel_tool_calls=False,
        tool_choice={"type": "allowed_tools", "allowed_tools": {
            "mode": "required", "tools": [{"type": "function", "function": {"name": "b"}}]}})
    req = engine.requests[-1]
    assert [t["function"]["name"] for t in req.tools or ()] == ["b"]  # allowed_tools hides the others
    assert (req.tool_choice, req.tool_choice_names, req.parallel_tool_calls) == ("required", ["b"], False)
    list(client.chat.completions.create(model="fake", messages=ASK, tools=tools, stream=True,
                                        tool_choice={"type": "function", "function": {"name": "a"}}))
    req = engine.requests[-1]
    assert [t["function"]["name"] for t in req.tools or ()] == ["a", "b"]  # a named function: all stay offered
    assert (req.tool_choice, req.tool_choice_names, req.tool_call_deltas) == ("required", ["a"], True)


def test_streamed_call_deltas_are_openais_incremental_format(scripted: tuple[openai.OpenAI, ScriptedService]) -> None:
    client, engine = scripted
    engine.items = [Piece(tool_call_delta={"index": 0, "id": "call_x", "name": "weather"}),
                    Piece(tool_call_delta={"index": 0, "arguments": '{"city": '}),
                    Piece(tool_call_delta={"index": 0, "arguments": '"Paris"}'}),
                    Piece(tool_calls=[{"id": "call_x", "function": {"index": 0, "name": "weather",
                                                                    "arguments": {"city": "Paris"}}}]),
                    Final(done_reason="stop")]
    raw = client.chat.completions.with_raw_response.create(model="fake", messages=ASK, stream=True)
    events = [json.loads(line[len("data: "):]) for line in raw.http_response.read().decode().split("\n")
              if line.startswith("data: {")]
    calls = [tc for e in events if e["choices"] for tc in e["choices"][0]["delta"].get("tool_calls", ())]
    assert calls == [
        {"index": 0, "id": "call_x", "type": "function", "function": {"name": "weather", "arguments": ""}},
        {"index": 0, "function": {"arguments": '{"city": '}},
        {"index": 0, "function": {"arguments": '"Paris"}'}},
    ]  # and the whole call is not sent again
    with client.chat.completions.stream(model="fake", messages=ASK) as stream:
        final = stream.get_final_completion()
    [call] = final.choices[0].message.tool_calls or []
    assert (call.id, call.function.name, call.function.arguments) == ("call_x", "weather", '{"city": "Paris"}')
    assert final.choices[0].finish_reason == "tool_calls"
