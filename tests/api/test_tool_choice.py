"""``tool_choice`` enforced by constrained decoding, through the real server, engine and the official SDKs.

SmolLM2-135M rarely calls a tool on its own, which makes it a good witness: for a question that has nothing to do
with the tools, ``auto`` gets text, while ``required``/``any`` and a named function get a call whose arguments
validate against the tool's schema. The model is given a tool-aware Go template (the rendered path) or, for the
native path, no template at all and a ``tools`` capability in its config. The first section tests the pieces
(schema, reader, prompt prefix, choice parsing) without a server.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import anthropic
import jsonschema
import openai
import pytest

from corral.api.openai import choose_tools, openai_tool_choice
from corral.errors import APIError, RequestError
from corral.inference import prompting, streams
from corral.inference.request import InferenceRequest, Piece
from corral.parsers.forced import ForcedCallReader, call_schema
from corral.parsers.tools import jinja_tool_call_prefix, tool_call_prefix
from corral.store import manifest as mf
from corral.templates.gotemplate import parse
from tests.api.test_thinking_tools import TOOLS_TEMPLATE
from tests.conftest import FIXTURES, NO_TOOLS, ROOT, ServerProcess, derive, native_tools_model, no_tools_model

TEMPLATES_DIR = FIXTURES / "ollama_templates"
WEATHER_PARAMS: dict[str, Any] = {
    "type": "object", "required": ["city", "unit"],
    # Bounded strings: a 135M model may otherwise ramble inside one until the token limit.
    "properties": {"city": {"type": "string", "maxLength": 20},
                   "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}}
TIME_PARAMS: dict[str, Any] = {
    "type": "object", "required": ["zone", "hours"],
    "properties": {"zone": {"type": "string", "maxLength": 20},
                   "hours": {"type": "integer", "minimum": 0, "maximum": 23}}}
SCHEMAS = {"get_weather": WEATHER_PARAMS, "get_time": TIME_PARAMS}
WEATHER: Any = {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                            "parameters": WEATHER_PARAMS}}
CLOCK: Any = {"type": "function", "function": {"name": "get_time", "description": "Current time in a time zone",
                                          "parameters": TIME_PARAMS}}
TOOLS: Any = [WEATHER, CLOCK]
ASK: Any = [{"role": "user", "content": "Why is the sky blue?"}]  # nothing to do with either tool
GREEDY: dict[str, Any] = {"temperature": 0, "max_tokens": 60}


# -- the pieces ------------------------------------------------------------------------------------------------------


def test_call_schema_accepts_exactly_a_call_to_an_allowed_tool() -> None:
    schema = call_schema(TOOLS)
    ok = {"name": "get_time", "arguments": {"zone": "UTC", "hours": 3}}
    jsonschema.validate(ok, schema)
    for bad in ({"name": "get_time", "arguments": {"city": "Paris", "unit": "celsius"}},  # another tool's arguments
                {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius", "extra": 1}},
                {"name": "nope", "arguments": {}},
                {"name": "get_time"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
    named = call_schema(TOOLS, ["get_weather"])  # one tool: no anyOf
    assert named["properties"]["name"] == {"const": "get_weather"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(ok, named)
    assert WEATHER_PARAMS.get("additionalProperties") is None  # the caller's schema is not changed


def test_call_schema_moves_refs_and_checks_the_parameters() -> None:
    params = {"type": "object", "properties": {"where": {"$ref": "#/$defs/place"}}, "required": ["where"],
              "$defs": {"place": {"type": "object", "properties": {"city": {"type": "string"}},
                                  "required": ["city"]}}}
    tool = {"type": "function", "function": {"name": "locate", "parameters": params}}
    schema = call_schema([tool, WEATHER])
    assert schema["anyOf"][0]["properties"]["arguments"]["properties"]["where"]["$ref"] == \
        "#/anyOf/0/properties/arguments/$defs/place"
    jsonschema.validate({"name": "locate", "arguments": {"where": {"city": "Oslo"}}}, schema)
    with pytest.raises(jsonschema.ValidationError):  # nested objects are closed too
        jsonschema.validate({"name": "locate", "arguments": {"where": {"city": "Oslo", "x": 1}}}, schema)
    bare = call_schema([{"type": "function", "function": {"name": "ping"}}])  # no parameters: any object
    jsonschema.validate({"name": "ping", "arguments": {"anything": [1]}}, bare)
    broken = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": 3}}}
    with pytest.raises(RequestError, match="invalid JSON schema in the parameters of tool 'f'"):
        call_schema([broken])
    dangling = {"type": "function", "function": {"name": "g", "parameters": {"$ref": "#/$defs/none"}}}
    with pytest.raises(RequestError, match="unresolvable \\$ref"):
        call_schema([dangling])
    with pytest.raises(RequestError, match="names no tool"):
        call_schema(TOOLS, ["other"])


OUTPUT = '{"name": "get_weather", "arguments": {\n  "city": "Paris, \\"FR\\" {x}",\n  "unit": "celsius"\n}\n}'


def test_reader_streams_the_name_then_the_arguments_however_the_output_is_split() -> None:
    args = json.loads(OUTPUT)["arguments"]
    for size in (1, 2, 3, 7, len(OUTPUT)):
        reader = ForcedCallReader(["get_time", "get_weather"])
        names: list[str] = []
        fragments: list[str] = []
        for start in range(0, len(OUTPUT), size):
            name, fragment = reader.add(OUTPUT[start:start + size])
            if name is not None:
                names.append(name)
                assert not "".join(fragments)  # the name comes before any argument text
            fragments.append(fragment)
        assert names == ["get_weather"]
        assert json.loads("".join(fragments)) == args
        assert reader.finish() == {"function": {"index": 0, "name": "get_weather", "arguments": args}}
    for cut in range(len(OUTPUT)):  # the token limit cut it: no call
        reader = ForcedCallReader(["get_weather"])
        reader.add(OUTPUT[:cut])
        assert reader.finish() is None


@pytest.mark.parametrize("split", [1, 2, 3])
def test_reader_fragments_hold_back_trailing_space(split: int) -> None:
    """The space before the outer object's closing brace is not part of the arguments."""
    reader = ForcedCallReader(["f"])
    text = '{"name": "f", "arguments": {"a": 1}   \n}'
    fragments = [reader.add(text[i:i + split])[1] for i in range(0, len(text), split)]
    assert "".join(fragments) == '{"a": 1}'


def test_reader_takes_an_object_in_another_key_order_at_the_end() -> None:
    reader = ForcedCallReader(["f"])
    assert reader.add('{"arguments": {"a": 1}, "name": "f"}') == (None, "")
    assert reader.finish() == {"function": {"index": 0, "name": "f", "arguments": {"a": 1}}}


def test_prompt_prefix_is_the_text_before_a_calls_json() -> None:
    assert tool_call_prefix(parse((TEMPLATES_DIR / "qwen2.5.gotmpl").read_text())) == "<tool_call>\n"
    assert tool_call_prefix(parse(TOOLS_TEMPLATE)) == "<tool_call>"
    assert tool_call_prefix(parse((TEMPLATES_DIR / "chatml.gotmpl").read_text())) == ""
    builtin = ROOT / "corral" / "templates" / "builtin" / "qwen.gotmpl"
    assert tool_call_prefix(parse(builtin.read_text())) == "<tool_call>\n"  # {{ range $m.ToolCalls }}, no if
    assert jinja_tool_call_prefix("{% if tools %}<tool_call>{% endif %}") == "<tool_call>\n"
    assert jinja_tool_call_prefix("{{ messages }}") == ""


def test_openai_tool_choice_shapes() -> None:
    assert openai_tool_choice(None) == ("auto", None, False)
    assert openai_tool_choice("required") == ("required", None, False)
    assert openai_tool_choice({"type": "function", "function": {"name": "f"}}) == ("required", ["f"], False)
    assert openai_tool_choice({"type": "function", "name": "f"}) == ("required", ["f"], False)  # Responses
    assert openai_tool_choice({"type": "allowed_tools", "allowed_tools": {
        "mode": "required", "tools": [{"type": "function", "function": {"name": "f"}}]}}) == ("required", ["f"], True)
    assert openai_tool_choice({"type": "allowed_tools", "mode": "auto",
                               "tools": [{"type": "function", "name": "g"}]}) == ("auto", ["g"], True)
    for bad in ("sometimes", {"type": "function"}, {"type": "file_search"},
                {"type": "allowed_tools", "mode": "maybe", "tools": []}):
        with pytest.raises(APIError):
            openai_tool_choice(bad)


def test_choose_tools() -> None:
    assert choose_tools(TOOLS, "none") == (None, {})
    assert choose_tools(TOOLS, "auto") == (TOOLS, {})
    assert choose_tools(TOOLS, "required", ["get_time"]) == (
        TOOLS, {"tool_choice": "required", "tool_choice_names": ["get_time"]})
    assert choose_tools(TOOLS, "auto", ["get_time"], only_named=True, parallel=False) == (
        [CLOCK], {"parallel_tool_calls": False})
    with pytest.raises(APIError, match='not among the tools: "nope"'):
        choose_tools(TOOLS, "required", ["nope"])
    with pytest.raises(APIError, match="no tools were given"):
        choose_tools(None, "required")


def test_parallel_tool_calls_false_keeps_the_first_call() -> None:
    limit = streams.CallLimit(parallel=False)
    one, two, three = ({"function": {"index": i, "name": "f", "arguments": {}}} for i in range(3))
    first = limit.apply(Piece(content="a", tool_calls=[one, two]))
    assert first is not None and first.tool_calls == [one]
    assert limit.apply(Piece(tool_calls=[three])) is None
    later = limit.apply(Piece(content="b", tool_calls=[three]))
    assert later is not None and later.content == "b" and later.tool_calls is None


class FakeEngineClient:
    """Stands in for the runner's client on the native path: streams the given chat-completion chunks."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events
        self.bodies: list[dict[str, Any]] = []

    async def stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        self.bodies.append(body)
        for event in self.events:
            yield event


def _native_items(events: list[dict[str, Any]], **fields: Any) -> tuple[list[Any], dict[str, Any]]:
    client = FakeEngineClient(events)
    req = InferenceRequest(model=SimpleNamespace(messages=[], system=""), messages=ASK,  # type: ignore[arg-type]
                           tools=TOOLS, **fields)
    settings = prompting.Settings(sampling={"n_predict": 10}, template=None, think=None, forced_names=None)

    async def run() -> list[Any]:
        call = await prompting.build(client, req, settings, 4096)  # type: ignore[arg-type]
        assert call.endpoint == prompting.CHAT
        return [item async for item in streams.pieces(client, call, req)]  # type: ignore[arg-type]

    return asyncio.run(run()), client.bodies[0]


def _chunk(index: int, **call: Any) -> dict[str, Any]:
    return {"choices": [{"delta": {"tool_calls": [{"index": index, **call}]}}]}


NATIVE_EVENTS = [
    _chunk(0, id="abc", function={"name": "get_time", "arguments": ""}),
    _chunk(0, function={"arguments": '{"zone": '}),
    _chunk(0, function={"arguments": '"UTC", "hours": 3}'}),
    _chunk(1, function={"name": "get_weather", "arguments": '{"city": "Oslo", "unit": "celsius"}'}),
    {"choices": [{"delta": {}, "finish_reason": "tool_calls"}], "timings": {"prompt_n": 5, "predicted_n": 9}},
]


def test_native_calls_stream_as_deltas_and_parallel_false_keeps_the_first() -> None:
    items, body = _native_items(NATIVE_EVENTS, tool_call_deltas=True)
    deltas = [i.tool_call_delta for i in items if isinstance(i, Piece) and i.tool_call_delta]
    assert deltas[:3] == [{"index": 0, "id": "abc", "name": "get_time"}, {"index": 0, "arguments": '{"zone": '},
                          {"index": 0, "arguments": '"UTC", "hours": 3}'}]
    second = deltas[3]
    assert second["index"] == 1 and second["name"] == "get_weather" and second["id"].startswith("call_")
    calls = [c for i in items if isinstance(i, Piece) for c in i.tool_calls or ()]
    assert [(c["id"], c["function"]["arguments"]) for c in calls] == [
        ("abc", {"zone": "UTC", "hours": 3}), (second["id"], {"city": "Oslo", "unit": "celsius"})]
    assert "parallel_tool_calls" not in body
    items, body = _native_items(NATIVE_EVENTS, parallel_tool_calls=False)
    assert body["parallel_tool_calls"] is False
    assert not any(isinstance(i, Piece) and i.tool_call_delta for i in items)  # only when asked for
    calls = [c for i in items if isinstance(i, Piece) for c in i.tool_calls or ()]
    assert [c["function"]["name"] for c in calls] == ["get_time"]


# -- through the server ----------------------------------------------------------------------------------------------


def _tools_model(server: ServerProcess) -> str:
    derive(server, "tool-choice", add={mf.MEDIA_TEMPLATE: TOOLS_TEMPLATE.encode()}, drop=(mf.MEDIA_SYSTEM,))
    return "tool-choice"


@pytest.fixture(scope="module")
def oai(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def claude(server: ServerProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0, timeout=120)


@pytest.fixture(scope="module", params=["rendered", "native"])
def model(request: pytest.FixtureRequest, server: ServerProcess) -> str:
    return _tools_model(server) if request.param == "rendered" else native_tools_model(server, "native-tool-choice")


def _valid(name: str, arguments: str | dict[str, Any]) -> dict[str, Any]:
    value = json.loads(arguments) if isinstance(arguments, str) else arguments
    jsonschema.validate(value, SCHEMAS[name])
    return value


@pytest.mark.e2e
def test_auto_answers_in_text_and_required_forces_a_valid_call(oai: openai.OpenAI, model: str) -> None:
    auto = oai.chat.completions.create(model=model, messages=ASK, tools=TOOLS, tool_choice="auto", **GREEDY)
    assert auto.choices[0].message.tool_calls is None and auto.choices[0].message.content
    r = oai.chat.completions.create(model=model, messages=ASK, tools=TOOLS, tool_choice="required", **GREEDY)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name in SCHEMAS
    _valid(call.function.name, call.function.arguments)


@pytest.mark.e2e
def test_a_named_function_is_the_one_called(oai: openai.OpenAI, model: str) -> None:
    for name in SCHEMAS:
        r = oai.chat.completions.create(model=model, messages=ASK, tools=TOOLS, **GREEDY,
                                        tool_choice={"type": "function", "function": {"name": name}})
        [call] = r.choices[0].message.tool_calls or []
        assert r.choices[0].finish_reason == "tool_calls" and call.function.name == name
        _valid(name, call.function.arguments)


@pytest.mark.e2e
def test_streamed_forced_call_arrives_in_argument_deltas(oai: openai.OpenAI, model: str) -> None:
    choice: Any = {"type": "function", "function": {"name": "get_time"}}
    whole = oai.chat.completions.create(model=model, messages=ASK, tools=TOOLS, tool_choice=choice, **GREEDY)
    [expected] = whole.choices[0].message.tool_calls or []
    chunks = list(oai.chat.completions.create(model=model, messages=ASK, tools=TOOLS, tool_choice=choice,
                                              stream=True, **GREEDY))
    deltas = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or ()]
    first, *rest = deltas
    assert first.index == 0 and first.id and first.type == "function"
    assert first.function is not None and first.function.name == "get_time" and first.function.arguments == ""
    assert len(rest) > 2  # the arguments come in pieces as they are generated
    assert all(d.index == 0 and d.id is None and d.function is not None and d.function.name is None for d in rest)
    joined = "".join(d.function.arguments or "" for d in rest if d.function is not None)
    assert json.loads(joined) == json.loads(expected.function.arguments)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    # The SDK's own accumulation makes the same call.
    with oai.chat.completions.stream(model=model, messages=ASK, tools=TOOLS, tool_choice=choice,
                                     **GREEDY) as stream:
        final = stream.get_final_completion()
    [call] = final.choices[0].message.tool_calls or []
    assert call.function.name == "get_time" and call.id.startswith("call_")
    assert _valid("get_time", call.function.arguments) == json.loads(expected.function.arguments)


@pytest.mark.e2e
def test_none_drops_the_tools_from_the_prompt(oai: openai.OpenAI, server: ServerProcess) -> None:
    model = _tools_model(server)
    with_tools = oai.chat.completions.create(model=model, messages=ASK, tools=TOOLS, temperature=0, max_tokens=1)
    none = oai.chat.completions.create(model=model, messages=ASK, tools=TOOLS, tool_choice="none", temperature=0,
                                       max_tokens=1)
    plain = oai.chat.completions.create(model=model, messages=ASK, temperature=0, max_tokens=1)
    assert none.usage is not None and plain.usage is not None and with_tools.usage is not None
    assert none.usage.prompt_tokens == plain.usage.prompt_tokens < with_tools.usage.prompt_tokens


@pytest.mark.e2e
def test_responses_required_and_named(oai: openai.OpenAI, server: ServerProcess) -> None:
    model = _tools_model(server)
    tools: Any = [{"type": "function", "name": t["function"]["name"], "parameters": t["function"]["parameters"]}
                  for t in TOOLS]
    r = oai.responses.create(model=model, input="Why is the sky blue?", tools=tools, tool_choice="required",
                             temperature=0, max_output_tokens=60)
    [item] = r.output
    assert item.type == "function_call" and item.status == "completed"
    _valid(item.name, item.arguments)
    with oai.responses.stream(model=model, input="Why is the sky blue?", tools=tools, temperature=0,
                              max_output_tokens=60, tool_choice={"type": "function", "name": "get_time"}) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert kinds.count("response.function_call_arguments.delta") > 2
    [item] = final.output
    assert item.type == "function_call" and item.name == "get_time"
    _valid("get_time", item.arguments)


@pytest.mark.e2e
def test_anthropic_any_and_tool(claude: anthropic.Anthropic, model: str) -> None:
    tools: Any = [{"name": n, "description": "a tool", "input_schema": s} for n, s in SCHEMAS.items()]
    m = claude.messages.create(model=model, max_tokens=60, messages=ASK, tools=tools, tool_choice={"type": "any"},
                               extra_body={"temperature": 0})
    assert m.stop_reason == "tool_use"
    [use] = m.content
    assert use.type == "tool_use" and use.name in SCHEMAS
    _valid(use.name, use.input)
    with claude.messages.stream(model=model, max_tokens=60, messages=ASK, tools=tools,
                                tool_choice={"type": "tool", "name": "get_time", "disable_parallel_tool_use": True},
                                extra_body={"temperature": 0}) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert sum(1 for e in events if e.type == "content_block_delta") > 2  # input_json_delta pieces
    assert final.stop_reason == "tool_use"
    [use] = final.content
    assert use.type == "tool_use" and use.name == "get_time"
    _valid("get_time", use.input)


@pytest.mark.e2e
def test_invalid_choices_are_400_in_each_shape(oai: openai.OpenAI, claude: anthropic.Anthropic,
                                               server: ServerProcess) -> None:
    model = _tools_model(server)
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError, match='not among the tools: "nope"'):
            oai.chat.completions.create(model=model, messages=ASK, tools=TOOLS, stream=stream,
                                        tool_choice={"type": "function", "function": {"name": "nope"}})
    with pytest.raises(openai.BadRequestError, match="no tools were given"):
        oai.chat.completions.create(model=model, messages=ASK, tool_choice="required")
    with pytest.raises(openai.BadRequestError, match="invalid tool_choice"):
        oai.chat.completions.create(model=model, messages=ASK, tools=TOOLS, tool_choice="always")  # type: ignore
    with pytest.raises(openai.BadRequestError, match=f'"{NO_TOOLS}" does not support tools'):
        oai.chat.completions.create(model=no_tools_model(server), messages=ASK, tools=TOOLS, tool_choice="required")
    with pytest.raises(openai.BadRequestError, match='not among the tools: "nope"'):
        oai.responses.create(model=model, input="hi", tool_choice={"type": "function", "name": "nope"},
                             tools=[{"type": "function", "name": "get_time", "parameters": TIME_PARAMS}])
    tools: Any = [{"name": "get_time", "input_schema": TIME_PARAMS}]
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(model=model, max_tokens=5, messages=ASK, tools=tools,
                               tool_choice={"type": "tool", "name": "nope"})
    body = info.value.body
    assert isinstance(body, dict) and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"] == 'tool_choice names a tool that is not among the tools: "nope"'
    bad_schema: Any = [{"name": "f", "input_schema": {"type": "object", "properties": {"a": {"type": 5}}}}]
    with pytest.raises(anthropic.BadRequestError, match="invalid JSON schema in the parameters of tool 'f'"):
        claude.messages.create(model=model, max_tokens=5, messages=ASK, tools=bad_schema, tool_choice={"type": "any"})
