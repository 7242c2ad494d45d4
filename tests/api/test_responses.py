"""``POST /v1/responses`` through the official ``openai`` SDK: the real server, engine and bundled model.

As in ``test_openai_api.py``, SmolLM2-135M answers poorly, so the real-model tests check shapes, events and errors;
a scripted engine covers what the bundled model cannot do (tool calls, reasoning, a failure in mid-stream) and the
exact mapping of input items to native messages.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from corral.api import responses as resp
from corral.errors import InferenceError
from corral.inference.service import Final, Piece
from tests.conftest import MODEL, ServerProcess
from tests.scripted import CALL, FAKE_MODEL, ScriptedService

ASK = "Why is the sky blue?"
PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
TEXT_EVENTS = ["response.created", "response.in_progress", "response.output_item.added",
               "response.content_part.added"]
TEXT_CLOSE = ["response.output_text.done", "response.content_part.done", "response.output_item.done"]


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=120)


# -- the real model ------------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_non_streaming_shape_usage_and_incomplete_at_the_limit(client: openai.OpenAI) -> None:
    r = client.responses.create(model=MODEL, input=ASK, max_output_tokens=8, temperature=0)
    assert r.id.startswith("resp_") and r.object == "response" and r.model == MODEL
    assert r.created_at > 1_600_000_000
    assert r.status == "incomplete"
    assert r.incomplete_details is not None and r.incomplete_details.reason == "max_output_tokens"
    [item] = r.output
    assert item.type == "message" and item.role == "assistant" and item.status == "completed"
    assert item.id.startswith("msg_")
    [part] = item.content
    assert part.type == "output_text" and part.text.strip()
    assert r.output_text == part.text
    assert r.usage is not None
    assert r.usage.output_tokens == 8 and r.usage.input_tokens >= 1
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert (r.max_output_tokens, r.temperature, r.store) == (8, 0.0, False)


@pytest.mark.e2e
def test_instructions_become_a_system_message(client: openai.OpenAI) -> None:
    """SmolLM2's template adds a default system prompt of its own, so the instructions are made longer than it."""
    instructions = "Answer like a pirate, in one short sentence, and never mention the sea. " * 4
    plain = client.responses.create(model=MODEL, input=ASK, max_output_tokens=2, temperature=0)
    told = client.responses.create(model=MODEL, input=ASK, instructions=instructions, max_output_tokens=2,
                                   temperature=0)
    assert told.instructions == instructions and plain.instructions is None
    assert told.usage is not None and plain.usage is not None
    assert told.usage.input_tokens > plain.usage.input_tokens + 20


@pytest.mark.e2e
def test_item_list_input(client: openai.OpenAI) -> None:
    r = client.responses.create(model=MODEL, max_output_tokens=4, temperature=0, input=[
        {"role": "user", "content": "Hi"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello! Ask away."}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": ASK}]},
    ])
    assert r.output_text.strip()
    assert r.usage is not None and r.usage.input_tokens > 20


@pytest.mark.e2e
def test_streaming_events_in_order_and_deltas_make_the_text(client: openai.OpenAI) -> None:
    whole = client.responses.create(model=MODEL, input=ASK, max_output_tokens=10, temperature=0)
    events = list(client.responses.create(model=MODEL, input=ASK, max_output_tokens=10, temperature=0, stream=True))
    types = [e.type for e in events]
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert types == [*TEXT_EVENTS, *["response.output_text.delta"] * len(deltas), *TEXT_CLOSE,
                     "response.incomplete"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(d.delta for d in deltas)
    assert text == whole.output_text
    done = events[len(TEXT_EVENTS) + len(deltas)]
    assert done.type == "response.output_text.done" and done.text == text
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.output_text == text and last.response.status == "incomplete"
    assert last.response.usage is not None and last.response.usage.output_tokens == 10
    created = events[0]
    assert created.type == "response.created" and created.response.status == "in_progress"
    assert created.response.id == last.response.id


@pytest.mark.e2e
def test_raw_sse_framing(server: ServerProcess) -> None:
    with server.client() as http:
        r = http.post("/v1/responses", json={"model": MODEL, "input": "Hi", "max_output_tokens": 2, "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    blocks = [b for b in r.text.split("\n\n") if b]
    first_line, data_line = blocks[0].split("\n")
    assert first_line == "event: response.created"
    assert json.loads(data_line.removeprefix("data: "))["type"] == "response.created"
    assert all(b.startswith("event: response.") for b in blocks)


@pytest.mark.e2e
def test_unknown_model_is_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(model="no-such-model", input="Hi")
    assert info.value.body == {"message": "model 'no-such-model' not found", "type": "not_found_error",
                               "param": None, "code": None}


TOOL: Any = {"type": "function", "name": "weather", "description": "Weather in a city",
             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}


@pytest.mark.e2e
def test_tools_to_a_model_without_tool_support(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="does not support tools"):
        client.responses.create(model=MODEL, input="Weather in Paris?", tools=[TOOL])
    r = client.responses.create(model=MODEL, input="Weather in Paris?", tools=[TOOL], tool_choice="none",
                                max_output_tokens=2, temperature=0)
    assert r.output[0].type == "message"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"input": [{"type": "bogus"}]}, 'input[0]: unknown input item type: "bogus"'),
    ({"input": [{"content": "x"}]}, "input[0]: input item missing required 'type' field"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
     "file inputs are not currently supported"),
    ({"input": ASK, "reasoning": {"effort": "enormous"}}, "invalid reasoning value"),
    ({"input": ASK, "previous_response_id": "resp_1"}, "previous_response_id is not supported"),
    ({"input": ""}, "input is required"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{"}]},
     "invalid tool call arguments"),
])
@pytest.mark.e2e
def test_bad_requests_are_400_in_openai_shape(client: openai.OpenAI, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, **kwargs)
    body = info.value.body
    assert isinstance(body, dict) and body["type"] == "invalid_request_error" and message in body["message"]


@pytest.mark.e2e
def test_openapi_documents_the_route(server: ServerProcess) -> None:
    with server.client() as http:
        spec = http.get("/openapi.json").json()
    assert "/v1/responses" in spec["paths"]
    assert {"ResponsesRequest", "ResponseObject"} <= set(spec["components"]["schemas"])


# -- a scripted engine: tool calls, reasoning, mapping, failures ---------------------------------------------------




@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[openai.OpenAI, ScriptedService]]:
    monkeypatch.setattr(resp, "resolve_model", lambda store, name: FAKE_MODEL)
    engine = ScriptedService()
    app = FastAPI()
    app.state.store = None
    app.state.service = engine
    app.include_router(resp.router)
    with TestClient(app) as http:
        yield openai.OpenAI(base_url="http://testserver/v1", api_key="x", http_client=http, max_retries=0), engine


def test_reasoning_and_function_calls_non_streaming(scripted: tuple[openai.OpenAI, ScriptedService]) -> None:
    client, engine = scripted
    engine.items = [Piece(thinking="Let me look."), Piece(tool_calls=[CALL]),
                    Final(done_reason="stop", prompt_eval_count=9, eval_count=4)]
    r = client.responses.create(model="fake", input="Weather?", tools=[TOOL], reasoning={"effort": "high"})
    assert r.status == "completed" and r.incomplete_details is None
    reasoning, call = r.output
    assert reasoning.type == "reasoning" and [s.text for s in reasoning.summary] == ["Let me look."]
    assert call.type == "function_call" and call.status == "completed"
    assert (call.call_id, call.name, json.loads(call.arguments)) == ("call_abc", "weather", {"city": "Paris"})
    assert r.usage is not None and (r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens) == (9, 4, 13)
    req = engine.requests[0]
    assert req.think == "high"
    assert req.tools == [{"type": "function", "function": {
        "name": "weather", "description": "Weather in a city", "parameters": TOOL["parameters"]}}]
    assert req.options == {"temperature": 1.0}  # top_p only when given, as Ollama


def test_streamed_reasoning_text_and_function_call_events(scripted: tuple[openai.OpenAI, ScriptedService]) -> None:
    client, engine = scripted
    engine.items = [Piece(thinking="Hmm"), Piece(thinking=" ok"), Piece(content="Checking"),
                    Piece(tool_calls=[{"function": {"name": "weather", "arguments": {}}}]),
                    Final(done_reason="stop", prompt_eval_count=3, eval_count=2)]
    events = list(client.responses.create(model="fake", input="Weather?", tools=[TOOL], stream=True))
    assert [e.type for e in events] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.delta", "response.reasoning_summary_text.done", "response.output_item.done",
        "response.output_item.added", "response.content_part.added", "response.output_text.delta", *TEXT_CLOSE,
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    added = [e for e in events if e.type == "response.output_item.added"]
    assert [e.output_index for e in added] == [0, 1, 2]
    final = events[-1]
    assert final.type == "response.completed"
    assert [i.type for i in final.response.output] == ["reasoning", "message", "function_call"]
    reasoning, _, call = final.response.output
    assert reasoning.type == "reasoning" and reasoning.summary[0].text == "Hmm ok"
    assert final.response.output_text == "Checking"
    assert call.type == "function_call" and call.arguments == "{}" and call.call_id.startswith("call_")


def test_completed_when_the_model_stops(scripted: tuple[openai.OpenAI, ScriptedService]) -> None:
    client, engine = scripted
    engine.items = [Piece(content="Hi"), Final(done_reason="stop", eval_count=1)]
    r = client.responses.create(model="fake", input="Hi")
    assert (r.status, r.incomplete_details, r.output_text) == ("completed", None, "Hi")
    events = list(client.responses.create(model="fake", input="Hi", stream=True))
    assert events[-1].type == "response.completed" and events[-1].response.status == "completed"


def test_request_mapping_to_the_engine(scripted: tuple[openai.OpenAI, ScriptedService]) -> None:
    client, engine = scripted
    engine.items = [Final(done_reason="stop")]
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    client.responses.create(
        model="fake", instructions="Be brief.", max_output_tokens=7, temperature=0.2, top_p=0.5,
        reasoning={"effort": "none"}, text={"format": {"type": "json_schema", "name": "x", "schema": schema}},
        input=[
            {"type": "message", "role": "developer", "content": "Use tools."},
            {"role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"},
                                         {"type": "input_image", "detail": "auto",
                                          "image_url": "data:image/png;base64," + PNG}]},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "thought"},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": '{"x": 1}'},
            {"type": "function_call_output", "call_id": "c1", "output": "42"},
        ],
    )
    req = engine.requests[0]
    assert req.options == {"temperature": 0.2, "top_p": 0.5, "num_predict": 7}
    assert req.format == schema and req.think is False and req.tools is None
    assert req.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "ab[img]", "images": [PNG]},  # the image after the texts, where it was
        {"role": "assistant", "content": "", "thinking": "thought",
         "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": {"x": 1}}}]},
        {"role": "tool", "content": "42", "tool_call_id": "c1", "tool_name": "f"},
    ]


def test_failure_after_streaming_began_is_response_failed(scripted: tuple[openai.OpenAI, ScriptedService]) -> None:
    client, engine = scripted
    engine.items = [Piece(content="partial"), InferenceError("llama-server process no longer running: -9")]
    events = list(client.responses.create(model="fake", input="Hi", stream=True))
    last = events[-1]
    assert last.type == "response.failed" and last.response.status == "failed"
    assert last.response.error is not None and "no longer running" in last.response.error.message
    assert last.sequence_number == len(events) - 1


def test_failure_before_streaming_keeps_its_status(scripted: tuple[openai.OpenAI, ScriptedService]) -> None:
    client, engine = scripted
    engine.items = [InferenceError("failed to load model")]
    with pytest.raises(openai.InternalServerError) as info:
        client.responses.create(model="fake", input="Hi", stream=True)
    assert info.value.body == {"message": "failed to load model", "type": "api_error", "param": None, "code": None}


def test_streamed_call_deltas_and_tool_choice_echo(scripted: tuple[openai.OpenAI, ScriptedService]) -> None:
    client, engine = scripted
    engine.items = [Piece(content="Sure."),
                    Piece(tool_call_delta={"index": 0, "id": "call_x", "name": "weather"}),
                    Piece(tool_call_delta={"index": 0, "arguments": '{"city": '}),
                    Piece(tool_call_delta={"index": 0, "arguments": '"Paris"}'}),
                    Piece(tool_calls=[{"id": "call_x", "function": {"index": 0, "name": "weather",
                                                                    "arguments": {"city": "Paris"}}}]),
                    Final(done_reason="stop")]
    choice: Any = {"type": "function", "name": "weather"}
    events = list(client.responses.create(model="fake", input="Weather?", tools=[TOOL], stream=True,
                                          tool_choice=choice, parallel_tool_calls=False))
    assert [e.type for e in events] == [
        *TEXT_EVENTS, "response.output_text.delta", *TEXT_CLOSE,
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done", "response.completed"]
    calls = [e for e in events if e.type == "response.function_call_arguments.delta"]
    assert [e.delta for e in calls] == ['{"city": ', '"Paris"}'] and {e.output_index for e in calls} == {1}
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert done.arguments == '{"city": "Paris"}'
    final = events[-1].response  # type: ignore[union-attr]
    assert [i.type for i in final.output] == ["message", "function_call"]
    call = final.output[1]
    assert call.type == "function_call" and (call.call_id, call.arguments) == ("call_x", '{"city": "Paris"}')
    assert final.parallel_tool_calls is False and final.tool_choice.type == "function"
    req = engine.requests[-1]
    assert (req.tool_choice, req.tool_choice_names, req.parallel_tool_calls, req.tool_call_deltas) == (
        "required", ["weather"], False, True)
