"""Tool-call parsing on the Go-template path: tag inference on real templates, recorded outputs of each model
family fed whole, split at every point and chunked at random, and arbitrary text."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.parsers import ToolCallParser, infer_tool_tag
from corral.templates.gotemplate import parse
from tests.conftest import FIXTURES, ROOT

RECORDED = json.loads((FIXTURES / "model_outputs" / "tool_calls.json").read_text(encoding="utf-8"))
TOOLS: list[dict[str, Any]] = RECORDED["tools"]
CASES: list[dict[str, Any]] = RECORDED["cases"]


def template(rel: str) -> Any:
    return parse((FIXTURES / rel).read_text(encoding="utf-8"))


def run(tag: str, chunks: list[str], tools: list[dict[str, Any]] = TOOLS) -> tuple[str, list[dict[str, Any]]]:
    """Feed the chunks, then finish; the concatenated content and all calls."""
    p = ToolCallParser(tag, tools)
    content: list[str] = []
    calls: list[dict[str, Any]] = []
    for c in chunks:
        text, got = p.add(c)
        content.append(text)
        calls.extend(got)
    text, got = p.finish()
    content.append(text)
    calls.extend(got)
    return "".join(content), calls


def expected_calls(case: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"function": {"index": i, **c}} for i, c in enumerate(case["calls"])]


def split(s: str, cuts: list[int]) -> list[str]:
    points = sorted({min(max(c, 0), len(s)) for c in cuts})
    bounds = [0, *points, len(s)]
    return [s[a:b] for a, b in itertools.pairwise(bounds)]


# ---------------------------------------------------------------------------------------------------------------
# Tag inference


@pytest.mark.parametrize(
    ("rel", "tag"),
    [
        ("ollama_templates/qwen2.5.gotmpl", "<tool_call>"),
        ("ollama_templates/deepseek.gotmpl", "<｜tool▁calls▁begin｜>"),
        ("ollama_templates/command-r.gotmpl", "Action: ```json\n["),
        ("ollama_templates/llama3-instruct.gotmpl", None),
        ("ollama_templates/mistral-instruct.gotmpl", None),
        ("ollama_templates/chatml.gotmpl", None),
        ("ollama_templates/phi-3.gotmpl", None),
        ("model_outputs/templates/llama3.2.gotmpl", "{"),
        ("model_outputs/templates/mistral-v0.3.gotmpl", "[TOOL_CALLS] ["),
        ("model_outputs/templates/phi4-mini.gotmpl", "<|tool_call|>["),
        ("model_outputs/templates/qwen3.gotmpl", "<tool_call>"),
    ],
)
def test_infer_tool_tag_on_real_templates(rel: str, tag: str | None) -> None:
    assert infer_tool_tag(template(rel)) == tag


@pytest.mark.parametrize(
    ("src", "tag"),
    [
        # Ollama's tools/template_test.go and tools_test.go shapes
        (
            '{{if .ToolCalls}}<tool_call>{{range .ToolCalls}}{"name": "{{.Function.Name}}"}{{end}}</tool_call>{{end}}',
            "<tool_call>",
        ),
        ('{{if .ToolCalls}}{{range .ToolCalls}}{"name": "{{.Function.Name}}"}{{end}}{{end}}', "{"),
        ('{{if .ToolCalls}}[{{range .ToolCalls}}{"name": "{{.Function.Name}}"}{{end}}]{{end}}', "["),
        ('{{if .ToolCalls}}[TOOL_CALLS] [{{range .ToolCalls}}{"n": 1}{{end}}][/TOOL_CALLS]{{end}}', "[TOOL_CALLS] ["),
        ("{{if .ToolCalls}}\r\n  <calls>\r\n{{end}}", "<calls>"),
        # the tag text sits in an else-if inside a range
        ('{{range .Messages}}{{if .Content}}{{.Content}}{{else if .ToolCalls}} <fn>{"a":1}{{end}}{{end}}', "<fn>"),
        # a non-literal action first: Ollama stops there and falls back to "{"
        ("{{if .ToolCalls}}{{ json .ToolCalls }}<|eot_id|>{{end}}", "{"),
        # a literal action counts as text (deepseek's {{ "\n" }})
        ('{{if .ToolCalls}}{{ "\\n" }}{{ "<calls>" }}{{end}}', "<calls>"),
        # .ToolCalls referenced, but not in an if: default tag
        ("{{range .Messages}}{{range .ToolCalls}}{{.Function.Name}}{{end}}{{end}}", "{"),
        # only the if's body counts, not its else
        ("{{if .ToolCalls}}{{else}}<tool_call>{{end}}", "{"),
        ("{{ .Prompt }}", None),
    ],
)
def test_infer_tool_tag_shapes(src: str, tag: str | None) -> None:
    assert infer_tool_tag(parse(src)) == tag


def test_recorded_cases_use_the_tag_their_template_gives() -> None:
    for case in CASES:
        assert infer_tool_tag(template(case["template"])) == case["tag"], case["id"]


# ---------------------------------------------------------------------------------------------------------------
# Recorded outputs


def check_case(case: dict[str, Any], content: str, calls: list[dict[str, Any]]) -> None:
    assert calls == expected_calls(case), case["id"]
    assert content == case["content"], case["id"]
    if case["calls"]:
        # nothing of a call leaks into content: not its tag, not its JSON
        assert case["tag"] not in content
        assert '"name"' not in content and '"tool_name"' not in content and "｜tool" not in content
        assert "</tool_call>" not in content


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_recorded_whole(case: dict[str, Any]) -> None:
    check_case(case, *run(case["tag"], [case["output"]]))


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_recorded_every_two_chunks(case: dict[str, Any]) -> None:
    out = case["output"]
    for i in range(len(out) + 1):
        check_case(case, *run(case["tag"], [out[:i], out[i:]]))


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_recorded_char_by_char(case: dict[str, Any]) -> None:
    check_case(case, *run(case["tag"], list(case["output"])))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_recorded_random_chunking(data: st.DataObject) -> None:
    case = data.draw(st.sampled_from(CASES))
    out = case["output"]
    cuts = data.draw(st.lists(st.integers(0, len(out)), max_size=40))
    check_case(case, *run(case["tag"], split(out, cuts)))


@pytest.mark.parametrize("case", [c for c in CASES if c["calls"]], ids=lambda c: c["id"])
def test_each_call_is_returned_as_soon_as_its_object_closes(case: dict[str, Any]) -> None:
    """Streaming: a call comes out with the chunk that closes its JSON, before any closing tag arrives; nothing
    after the tag is emitted as content in the meantime."""
    p = ToolCallParser(case["tag"], TOOLS)
    out = case["output"]
    seen: list[int] = []
    content = ""
    for i, ch in enumerate(out):
        text, calls = p.add(ch)
        content += text
        seen.extend(i for _ in calls)
    ends: list[int] = []
    decoder = json.JSONDecoder()
    i = 0
    while i < len(out):
        if out[i] == "{":
            _, end = decoder.raw_decode(out, i)
            ends.append(end - 1)
            i = end
        else:
            i += 1
    assert seen == ends
    assert case["tag"] not in content


def test_content_before_the_tag_streams_at_once() -> None:
    p = ToolCallParser("<tool_call>", TOOLS)
    assert p.add("Let me check. ") == ("Let me check. ", [])
    assert p.add("Now <tool") == ("Now ", [])  # a possible partial tag is held back
    assert p.add("_c") == ("", [])
    assert p.add("all>\n{") == ("", [])
    assert p.add('"name": "get_time", "arguments": {}}') == (
        "",
        [{"function": {"index": 0, "name": "get_time", "arguments": {}}}],
    )
    assert p.add("\n</tool_call>") == ("", [])
    assert p.finish() == ("", [])


def test_partial_tag_that_is_not_a_tag_is_released() -> None:
    p = ToolCallParser("<tool_call>", TOOLS)
    assert p.add("a <tool") == ("a ", [])
    assert p.add("box> b") == ("<toolbox> b", [])
    assert p.add("<tool_") == ("", [])
    assert p.finish() == ("<tool_", [])


# Ollama's tools_test.go TestParser cases, with the tag its templates give, and their content after finish().
OLLAMA_CASES: list[tuple[str, str, list[str], str, list[tuple[str, dict[str, Any]]]]] = [
    ("no calls", "<tool_call>", ["Hello, how can I help you today?"], "Hello, how can I help you today?", []),
    ("empty input", "<tool_call>", [""], "", []),
    (
        "empty args",
        "<tool_call>",
        ['<tool_call>{"name": "say_hello", "arguments": {}}</tool_call>'],
        "",
        [("say_hello", {})],
    ),
    (
        "qwen no args with text",
        "<tool_call>",
        ["Let me say hello to the user. I'll use the say_hello tool. "],
        "Let me say hello to the user. I'll use the say_hello tool. ",
        [],
    ),
    (
        "json split",
        "{",
        ["{", '"name": "get_time",', '"arguments": {', '"timezone": "Tokyo"', "}", "}"],
        "",
        [("get_time", {"timezone": "Tokyo"})],
    ),
    (
        "json not a tool call",
        "{",
        ["{", '"name": "search", ', '"arguments": {', '"query": "What is the capital of Canada?"', "}", "}"],
        '{"name": "search", "arguments": {"query": "What is the capital of Canada?"}}',
        [],
    ),
    (
        "json object followed by tool call",
        "{",
        ['{"name": "jeff"}', '{"name": "get_time", "arguments": {"timezone": "UTC"}}'],
        '{"name": "jeff"}{"name": "get_time", "arguments": {"timezone": "UTC"}}',
        [],
    ),
    ("json code", "{", ['for { fmt.Println("hello") }'], 'for { fmt.Println("hello") }', []),
    ("code block", "{", ['{ fmt.Println("hello") }'], '{ fmt.Println("hello") }', []),
    (
        "list multiple",
        "[",
        ["[", "{", '"name": "get_time", ', '"arguments": {"timezone": "UTC"}', "},", '{"name": "say_hello"', "}]"],
        "",
        [("get_time", {"timezone": "UTC"}), ("say_hello", {})],
    ),
    ("list trailing ]", "[", ['[{"name": "say_hello", "arguments": {}}]', "]"], "", [("say_hello", {})]),
    ("list not a tool call", "[", ["[special", " del", "ivery]"], "[special delivery]", []),
    ("list of numbers", "[", ["[1, 2, 3] and more"], "[1, 2, 3] and more", []),
    (
        "list invalid",
        "[",
        ['[{"name": "search", "arguments": {"query": "x"}}'],
        '[{"name": "search", "arguments": {"query": "x"}}',
        [],
    ),
    (
        "args before name",
        "<tool_call>",
        ['<tool_call>{"arguments": {"timezone": "say_hello"}, "name": "get_time"}</tool_call>'],
        "",
        [("get_time", {"timezone": "say_hello"})],
    ),
    (
        "nested OpenAI shape",
        "<tool_call>",
        ['<tool_call>{"type": "function", "function": {"name": "get_time", "arguments": "{\\"timezone\\": 0}"}}'],
        "",
        [("get_time", {"timezone": 0})],
    ),
    (
        "key equal to the tool name",
        "<tool_call>",
        ['<tool_call>{"get_time": {"timezone": "UTC"}}</tool_call>'],
        "",
        [("get_time", {"timezone": "UTC"})],
    ),
    (
        "special-token framing",
        "[tool]",
        ['[tool]get_time[args]{"timezone": "UTC"}[end]'],
        "[end]",
        [("get_time", {"timezone": "UTC"})],
    ),
    (
        "namespaced name",
        "<tool_call>",
        ['<tool_call>{"name": "functions.get_time", "arguments": {}}</tool_call>'],
        "",
        [("get_time", {})],
    ),
    (
        "arguments that are not an object",
        "<tool_call>",
        ['<tool_call>{"name": "get_time", "arguments": ["UTC"]}</tool_call>'],
        '<tool_call>{"name": "get_time", "arguments": ["UTC"]}</tool_call>',
        [],
    ),
    (
        "tool name with collision non streaming",
        "<tool_call>",
        ['<tool_call>{"name": "say_hello'],
        '<tool_call>{"name": "say_hello',
        [],
    ),
    (
        "whitespace before bare json",
        "{",
        ["\n\n", "  ", '{"name": "say_hello", "parameters": {}}'],
        "\n\n  ",
        [("say_hello", {})],
    ),
    (
        "text after bare json call",
        "{",
        ['{"name": "say_hello", "parameters": {}}\nDone.'],
        "Done.",
        [("say_hello", {})],
    ),
]


@pytest.mark.parametrize(("name", "tag", "chunks", "content", "calls"), OLLAMA_CASES, ids=[c[0] for c in OLLAMA_CASES])
def test_ollama_cases(
    name: str, tag: str, chunks: list[str], content: str, calls: list[tuple[str, dict[str, Any]]]
) -> None:
    want = [{"function": {"index": i, "name": n, "arguments": a}} for i, (n, a) in enumerate(calls)]
    assert run(tag, chunks) == (content, want)
    whole = "".join(chunks)
    assert run(tag, [whole]) == (content, want)
    for i in range(len(whole) + 1):
        assert run(tag, [whole[:i], whole[i:]]) == (content, want)


def test_without_tools_everything_is_content() -> None:
    out = '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>'
    assert run("<tool_call>", [out], tools=[]) == (out, [])


def test_after_finish_text_passes_through() -> None:
    p = ToolCallParser("<tool_call>", TOOLS)
    assert p.add("<tool_call>") == ("", [])
    assert p.finish() == ("<tool_call>", [])
    assert p.add("more") == ("more", [])


def test_tools_given_as_pydantic_like_objects() -> None:
    class Tool:
        def model_dump(self) -> dict[str, Any]:
            return {"type": "function", "function": {"name": "ping"}}

    tools: list[Any] = [Tool(), {"name": "flat"}, {"function": {}}, "junk"]
    assert run("{", ['{"name": "ping", "arguments": {}}{"name": "flat"}'], tools=tools) == (
        "",
        [
            {"function": {"index": 0, "name": "ping", "arguments": {}}},
            {"function": {"index": 1, "name": "flat", "arguments": {}}},
        ],
    )


def test_streaming_cost_is_linear() -> None:
    """A long argument (a tool writing a file) fed one token at a time: each add scans only the new text."""
    body = 'x{}\\" ' * 40_000
    out = '<tool_call>\n{"name": "search_web", "arguments": {"query": ' + json.dumps(body) + "}}\n</tool_call>"
    chunks = [out[i : i + 3] for i in range(0, len(out), 3)]
    t0 = time.perf_counter()
    content, calls = run("<tool_call>", chunks)
    elapsed = time.perf_counter() - t0
    assert content == ""
    assert calls[0]["function"]["arguments"] == {"query": body}
    assert elapsed < 5.0, elapsed


# ---------------------------------------------------------------------------------------------------------------
# Arbitrary text

FRAGMENTS = [
    "{",
    "}",
    "[",
    "]",
    '"',
    "\\",
    ",",
    ":",
    " ",
    "\n",
    "a",
    '"name"',
    '"arguments"',
    '"get_time"',
    "get_",
    "say_hello",
    "<tool_call>",
    "</tool_call>",
    "<tool",
    "[TOOL_CALLS] [",
    "<｜tool▁calls▁begin｜>",
    '{"name": "get_time", "arguments": {}}',
    '{"name": "say_hello_world"}',
    "```",
]
TAGS = ["<tool_call>", "{", "[", "[TOOL_CALLS] [", "<｜tool▁calls▁begin｜>", "Action: ```json\n["]


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(TAGS),
    st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=4), max_size=40).map("".join),
    st.lists(st.integers(0, 400), max_size=30),
)
def test_arbitrary_text_never_raises_and_chunking_does_not_matter(tag: str, out: str, cuts: list[int]) -> None:
    whole = run(tag, [out])
    assert run(tag, split(out, cuts)) == whole
    assert run(tag, list(out)) == whole
    content, calls = whole
    for i, c in enumerate(calls):
        assert c["function"]["index"] == i
        assert isinstance(c["function"]["arguments"], dict)
    if not calls:
        assert content == out  # nothing is lost when no call was made


def test_deeply_nested_json_does_not_raise() -> None:
    out = "<tool_call>" + '{"name": "get_time", "arguments": ' + "[" * 100_000 + "]" * 100_000 + "}"
    content, calls = run("<tool_call>", [out])
    assert calls == []
    assert content == out
    deep = '{"a":' * 5000 + "1" + "}" * 5000
    assert run("{", [deep]) == (deep, [])


def test_builtin_qwen_template_without_an_if_still_gives_its_tag() -> None:
    """Corral's builtin qwen template prints calls with a bare ``range $m.ToolCalls``: the tag comes from the range,
    so a wrapped call parses as a call with no stray ``<tool_call>`` text."""
    src = (ROOT / "corral" / "templates" / "builtin" / "qwen.gotmpl").read_text()
    tag = infer_tool_tag(parse(src))
    assert tag == "<tool_call>"
    out = '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
    content, calls = run(tag, list(out))
    assert [c["function"]["name"] for c in calls] == ["get_time"] and "<tool_call>" not in content
