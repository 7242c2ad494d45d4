"""Ollama's prompt assembly on real Ollama templates: collation, tools, thinking, images, legacy templates."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.errors import TemplateError
from corral.templates.gotemplate import Template, parse
from corral.templates.prompt import (
    DEFAULT_TEMPLATE,
    cut_at_response,
    execute_values,
    ollama_template,
    render_chat,
    render_generate,
)
from tests.conftest import FIXTURES

TEMPLATES_DIR = FIXTURES / "ollama_templates"
TEMPLATES: dict[str, Template] = {p.stem: parse(p.read_text(encoding="utf-8")) for p in TEMPLATES_DIR.glob("*.gotmpl")}

SYS = "You are a helpful assistant."
U1 = "Hello, how are you?"
A1 = "I'm doing great. How can I help you today?"
U2 = "I'd like to show off how chat templating works!"
CONVERSATION = [
    {"role": "system", "content": SYS},
    {"role": "user", "content": U1},
    {"role": "assistant", "content": A1},
    {"role": "user", "content": U2},
]

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get current weather information for a location",
        "parameters": {
            "type": "object",
            "required": ["location"],
            "properties": {
                "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                "unit": {
                    "type": "string",
                    "description": "The unit of temperature to use",
                    "enum": ["celsius", "fahrenheit"],
                    "default": "celsius",  # not an Ollama field: dropped, as Go's json.Unmarshal drops it
                },
            },
            "additionalProperties": False,
        },
        "strict": True,
    },
}
WEATHER_JSON = (
    '{"name":"get_weather","description":"Get current weather information for a location",'
    '"parameters":{"type":"object","required":["location"],"properties":{'
    '"location":{"type":"string","description":"The city and state, e.g. San Francisco, CA"},'
    '"unit":{"type":"string","description":"The unit of temperature to use","enum":["celsius","fahrenheit"]}}}}'
)
TOOL_TURNS: list[dict[str, Any]] = [
    {"role": "user", "content": "What's the weather in SF?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"function": {"name": "get_weather", "arguments": {"location": "San Francisco, CA"}}}],
    },
    {"role": "tool", "content": '{"temperature": 22}', "tool_name": "get_weather"},
]


def test_all_fixtures_parse() -> None:
    assert len(TEMPLATES) >= 10
    for name, t in TEMPLATES.items():
        assert t.root.nodes, name


# ---------------------------------------------------------------------------------------------------------------
# The standard conversation on each template (matches Ollama's template/testdata golden files)

EXPECTED = {
    "chatml": (
        f"<|im_start|>system\n{SYS}<|im_end|>\n<|im_start|>user\n{U1}<|im_end|>\n"
        f"<|im_start|>assistant\n{A1}<|im_end|>\n<|im_start|>user\n{U2}<|im_end|>\n<|im_start|>assistant\n"
    ),
    "llama3-instruct": (
        f"<|start_header_id|>system<|end_header_id|>\n\n{SYS}<|eot_id|>"
        f"<|start_header_id|>user<|end_header_id|>\n\n{U1}<|eot_id|>"
        f"<|start_header_id|>assistant<|end_header_id|>\n\n{A1}<|eot_id|>"
        f"<|start_header_id|>user<|end_header_id|>\n\n{U2}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    "mistral-instruct": f"[INST] {SYS}\n\n{U1}[/INST] {A1}</s>[INST] {U2}[/INST]",
    "gemma-instruct": (
        f"<start_of_turn>user\n{SYS}\n{U1}<end_of_turn>\n<start_of_turn>model\n{A1}<end_of_turn>\n"
        f"<start_of_turn>user\n{U2}<end_of_turn>\n<start_of_turn>model\n"
    ),
    "phi-3": (
        f"<|system|>\n{SYS}<|end|>\n<|user|>\n{U1}<|end|>\n<|assistant|>\n{A1}<|end|>\n"
        f"<|user|>\n{U2}<|end|>\n<|assistant|>\n"
    ),
    "zephyr": (
        f"<|system|>\n{SYS}</s>\n<|user|>\n{U1}</s>\n<|assistant|>\n{A1}</s>\n<|user|>\n{U2}</s>\n<|assistant|>\n"
    ),
    # legacy template: one run per (system, prompt, response) group, the last one cut at .Response
    "phi-3-legacy": (
        f"<|system|>\n{SYS}<|end|>\n<|user|>\n{U1}<|end|>\n<|assistant|>\n{A1}<|end|>"
        f"<|user|>\n{U2}<|end|>\n<|assistant|>\n"
    ),
    # an older llama3 revision prints .System and then ranges over Messages, which include the system message
    "llama3-instruct-v1": (
        f"<|start_header_id|>system<|end_header_id|>\n\n{SYS}<|eot_id|>"
        f"<|start_header_id|>system<|end_header_id|>\n\n{SYS}<|eot_id|>"
        f"<|start_header_id|>user<|end_header_id|>\n\n{U1}<|eot_id|>"
        f"<|start_header_id|>assistant<|end_header_id|>\n\n{A1}<|eot_id|>"
        f"<|start_header_id|>user<|end_header_id|>\n\n{U2}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    "qwen2.5": (
        f"<|im_start|>system\n{SYS}<|im_end|>\n<|im_start|>user\n{U1}<|im_end|>\n"
        f"<|im_start|>assistant\n{A1}<|im_end|>\n<|im_start|>user\n{U2}<|im_end|>\n<|im_start|>assistant\n"
    ),
    "command-r": (
        f"<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>{SYS}<|END_OF_TURN_TOKEN|>"
        f"<|START_OF_TURN_TOKEN|><|USER_TOKEN|>{U1}<|END_OF_TURN_TOKEN|>"
        f"<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>{A1}<|END_OF_TURN_TOKEN|>"
        f"<|START_OF_TURN_TOKEN|><|USER_TOKEN|>{U2}<|END_OF_TURN_TOKEN|>"
        "<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>\n"
    ),
    "deepseek": f"{SYS}<｜User｜>{U1}<｜Assistant｜>{A1}<｜end▁of▁sentence｜><｜User｜>{U2}<｜Assistant｜>",
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_system_user_assistant_user(name: str) -> None:
    assert render_chat(TEMPLATES[name], CONVERSATION) == EXPECTED[name]


@pytest.mark.parametrize(
    ("name", "want"),
    [
        ("chatml", f"<|im_start|>user\n{U1}<|im_end|>\n<|im_start|>assistant\n"),
        ("mistral-instruct", f"[INST] {U1}[/INST]"),
        ("gemma-instruct", f"<start_of_turn>user\n{U1}<end_of_turn>\n<start_of_turn>model\n"),
        ("phi-3-legacy", f"<|user|>\n{U1}<|end|>\n<|assistant|>\n"),
        ("llama3-instruct-v1", f"<|start_header_id|>user<|end_header_id|>\n\n{U1}<|eot_id|>"
         "<|start_header_id|>assistant<|end_header_id|>\n\n"),
    ],
)  # fmt: skip
def test_single_user_message(name: str, want: str) -> None:
    assert render_chat(TEMPLATES[name], [{"role": "user", "content": U1}]) == want


def test_gemma_joins_several_system_messages() -> None:
    msgs = [{"role": "system", "content": "A"}, {"role": "user", "content": "q"}, {"role": "system", "content": "B"}]
    msgs.append({"role": "user", "content": "r"})
    # the template's own $system accumulator: "A" goes with the first user turn, "B" with the second
    assert render_chat(TEMPLATES["gemma-instruct"], msgs) == (
        "<start_of_turn>user\nA\nq<end_of_turn>\n<start_of_turn>user\nB\nr<end_of_turn>\n<start_of_turn>model\n"
    )


# ---------------------------------------------------------------------------------------------------------------
# Collation


def test_collate_merges_same_role_but_not_tool_messages() -> None:
    t = parse(
        "{{ .System }}|{{ range .Messages }}[{{ .Role }}:{{ .Content }}{{ with .ToolName }}@{{ . }}{{ end }}]{{ end }}"
    )
    msgs = [
        {"role": "system", "content": "S1"},
        {"role": "system", "content": "S2"},
        {"role": "user", "content": "a"},
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": "c"},
        {"role": "tool", "content": "t1", "tool_name": "f"},
        {"role": "tool", "content": "t2", "tool_name": "g"},
        {"role": "USER", "content": "d"},
    ]
    assert render_chat(t, msgs) == "S1\n\nS2|[system:S1\n\nS2][user:a\n\nb][assistant:c][tool:t1@f][tool:t2@g][user:d]"


def test_merged_message_keeps_first_messages_other_fields() -> None:
    t = parse("{{ range .Messages }}{{ .Content }}/{{ .Thinking }}{{ end }}")
    msgs = [
        {"role": "assistant", "content": "x", "thinking": "t1"},
        {"role": "assistant", "content": "y", "thinking": "t2"},
    ]
    assert render_chat(t, msgs) == "x\n\ny/t1"


def test_caller_messages_are_not_mutated() -> None:
    msgs: list[dict[str, Any]] = [
        {"role": "user", "content": "a", "images": ["aGk="]},
        {"role": "user", "content": "b"},
    ]
    snapshot = json.dumps(msgs)
    render_chat(TEMPLATES["chatml"], msgs)
    assert json.dumps(msgs) == snapshot


# ---------------------------------------------------------------------------------------------------------------
# Tools


def test_qwen25_tools_call_and_result() -> None:
    out = render_chat(
        TEMPLATES["qwen2.5"], [{"role": "system", "content": "Be brief."}, *TOOL_TURNS], tools=[WEATHER_TOOL]
    )
    assert out == (
        "<|im_start|>system\nBe brief.\n\n# Tools\n\nYou may call one or more functions to assist with the user query."
        "\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
        '{"type": "function", "function": ' + WEATHER_JSON + "}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments within "
        "<tool_call></tool_call> XML tags:\n<tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\nWhat's the weather in SF?<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"location":"San Francisco, CA"}}\n'
        "</tool_call><|im_end|>\n"
        '<|im_start|>user\n<tool_response>\n{"temperature": 22}\n</tool_response><|im_end|>\n'
        "<|im_start|>assistant\n"
    )


def test_qwen25_last_assistant_message_is_left_open() -> None:
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hel"}]
    assert render_chat(TEMPLATES["qwen2.5"], msgs) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nHel"


def test_command_r_tools() -> None:
    out = render_chat(TEMPLATES["command-r"], TOOL_TURNS, tools=[WEATHER_TOOL])
    assert "def get_weather(location: string, unit: string, ) -> List[Dict]:\n" in out
    assert "        location (string): The city and state, e.g. San Francisco, CA\n" in out
    assert (
        '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>\nAction: ```json\n[\n    {\n        "tool_name": "get_weather",\n'
        '        "parameters": {"location":"San Francisco, CA"}\n    }\n]```<|END_OF_TURN_TOKEN|>'
    ) in out
    assert out.endswith(
        '<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|><results>\nconsole_output: {"temperature": 22}\n</results>'
        "<|END_OF_TURN_TOKEN|><|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>\n"
    )


def test_deepseek_tools_and_tool_results() -> None:
    out = render_chat(TEMPLATES["deepseek"], TOOL_TURNS, tools=[WEATHER_TOOL])
    assert out == (
        "\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
        + WEATHER_JSON
        + "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
        "<tool_call></tool_call> XML tags."
        "<｜User｜>What's the weather in SF?<｜Assistant｜>\n<｜tool▁calls▁begin｜>\n"
        '<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{"location":"San Francisco, CA"}\n'
        "```<｜tool▁call▁end｜>\n<｜tool▁calls▁end｜><｜end▁of▁sentence｜><｜end▁of▁sentence｜>"
        '\n<｜tool▁output▁begin｜>{"temperature": 22}<｜tool▁output▁end｜>\n<｜Assistant｜>'
    )


def test_tools_json_is_the_lowercase_api_shape() -> None:
    t = parse("{{ range .Messages }}{{ end }}{{ json .Tools }}|{{ .Tools }}|{{ if .Tools }}yes{{ else }}no{{ end }}")
    one = "[" + '{"type":"function","function":' + WEATHER_JSON + "}]"
    assert render_chat(t, [{"role": "user", "content": "x"}], tools=[WEATHER_TOOL]) == f"{one}|{one}|yes"
    assert render_chat(t, [{"role": "user", "content": "x"}]) == "null|null|no"  # no tools: Go nil slice
    assert render_chat(t, [{"role": "user", "content": "x"}], tools=[]) == "[]|[]|no"
    assert render_generate(t, prompt="x") == "[]|[]|no"  # /api/generate passes an empty tool list


def test_tool_fields_and_properties() -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "f",
            "parameters": {
                "type": "object",
                "$defs": {"b": 1, "a": 2},
                "properties": {
                    "s": {"type": "string"},
                    "n": {"type": ["integer", "null"], "description": "maybe"},
                    "l": {"type": "array", "items": {"type": "string"}},
                    "o": {"type": "object", "properties": {"z": {"type": "string"}, "a": {"type": "number"}}},
                    "u": {"anyOf": [{"type": "string"}, {"type": "boolean"}]},
                    "x": {},
                },
            },
        },
    }
    t = parse(
        "{{ range .Messages }}{{ end }}{{ range .Tools }}{{ .Type }} {{ .Function.Name }} "
        "{{ .Function.Description }}~{{ range $k, $v := .Function.Parameters.Properties }}"
        "{{ $k }}:{{ $v.Type }}:{{ toTypeScriptType $v }};{{ end }}~{{ json .Function.Parameters }}{{ end }}"
    )
    out = render_chat(t, [{"role": "user", "content": "q"}], tools=[tool])
    head, props, params = out.split("~")
    assert head == "function f "
    assert props == (
        "l:array:any[];n:[integer null]:number | null;o:object:Record<string, any>;s:string:string;"
        "u::string | boolean;x::any;"
    )
    assert json.loads(params)["properties"]["o"] == {
        "type": "object",
        "properties": {"z": {"type": "string"}, "a": {"type": "number"}},
    }
    # the top-level properties map is a Go map (sorted); nested properties keep their order
    assert params == (
        '{"type":"object","$defs":{"a":2,"b":1},"properties":{"l":{"type":"array","items":{"type":"string"}},'
        '"n":{"type":["integer","null"],"description":"maybe"},'
        '"o":{"type":"object","properties":{"z":{"type":"string"},"a":{"type":"number"}}},'
        '"s":{"type":"string"},"u":{"anyOf":[{"type":"string"},{"type":"boolean"}]},"x":{}}}'
    )


def test_tool_call_arguments_behave_like_go_maps() -> None:
    t = parse(
        "{{ range .Messages }}{{ range .ToolCalls }}{{ .ID }}#{{ .Function.Index }} {{ .Function.Name }} "
        "{{ .Function.Arguments }} {{ range $k, $v := .Function.Arguments }}{{ $k }}={{ $v }},{{ end }}"
        "{{ end }}{{ end }}"
    )
    msgs = [
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "call_1",
                    "function": {"index": 2, "name": "f", "arguments": {"b": 1000000, "a": "<x>", "c": [1, 2.5]}},
                },
                {"function": {"name": "g"}},
            ],
        }
    ]
    out = render_chat(t, msgs)
    # JSON numbers are float64 in Go: 1000000 prints as 1e+06 with %v but as 1000000 in JSON
    assert out == ('call_1#2 f {"a":"\\u003cx\\u003e","b":1000000,"c":[1,2.5]} a=<x>,b=1e+06,c=[1 2.5],#0 g {} ')


def test_struct_fields_are_checked() -> None:
    t = parse("{{ range .Messages }}{{ .Nope }}{{ end }}")
    with pytest.raises(TemplateError, match=r"can't evaluate field Nope in type \*template.templateMessage"):
        render_chat(t, [{"role": "user", "content": "x"}])


def test_messages_json_uses_go_field_names() -> None:
    t = parse("{{ json .Messages }}")
    out = render_chat(t, [{"role": "user", "content": "hi"}])
    assert out == (
        '[{"Role":"user","Content":"hi","Thinking":"","Images":null,"ToolCalls":null,"ToolName":"","ToolCallID":""}]'
    )


# ---------------------------------------------------------------------------------------------------------------
# Thinking

THINK_PROBE = "{{ range .Messages }}{{ end }}{{ .Think }}|{{ .ThinkLevel }}|{{ .IsThinkSet }}"


@pytest.mark.parametrize(
    ("think", "level", "want"),
    [
        (None, None, "false||false"),
        (True, None, "true|medium|true"),
        (False, None, "false||true"),
        (None, "high", "true|high|true"),
        (True, "low", "true|low|true"),
    ],
)
def test_think_values(think: bool | None, level: str | None, want: str) -> None:
    t = parse(THINK_PROBE)
    assert render_chat(t, [{"role": "user", "content": "x"}], think=think, think_level=level) == want
    assert render_generate(t, prompt="x", think=think, think_level=level) == want


def test_deepseek_thinking() -> None:
    t = TEMPLATES["deepseek"]
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello", "thinking": "hmm"}]
    assert render_chat(t, msgs, think=True) == "<｜User｜>hi<｜Assistant｜><think>\n        hmm\n      </think>Hello"
    assert render_chat(t, msgs) == "<｜User｜>hi<｜Assistant｜>Hello"
    # thinking explicitly off: the template pre-fills an empty think block
    assert render_chat(t, msgs[:1], think=False) == "<｜User｜>hi<｜Assistant｜><think> </think>\n    "
    assert render_chat(t, msgs[:1], think=True) == "<｜User｜>hi<｜Assistant｜>"


# ---------------------------------------------------------------------------------------------------------------
# Images


def test_image_tags() -> None:
    t = parse("{{ range .Messages }}{{ .Content }}({{ len .Images }})|{{ end }}")
    msgs: list[dict[str, Any]] = [
        {"role": "user", "content": "look", "images": ["aGk="]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "a [img] b [img] c", "images": [b"x", b"y", b"z"]},
    ]
    assert render_chat(t, msgs) == "[img-0]look(1)|ok(0)|[img-3]a [img-1] b [img-2] c(3)|"
    assert render_generate(t, prompt="see", images=["aGk="]) == "[img-0]see(1)|"
    # without chatPrompt (a request template override), no tags are added
    assert execute_values(t, messages=msgs[:1]) == "look(1)|"


# ---------------------------------------------------------------------------------------------------------------
# Legacy (prompt/response) templates


def test_legacy_groups_and_cut() -> None:
    t = TEMPLATES["phi-3-legacy"]
    # ending with an assistant message continues it: the last group is cut right after .Response
    assert render_chat(t, [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]) == (
        "<|user|>\na<|end|>\n<|assistant|>\nb"
    )
    msgs = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "tool", "content": "ignored"},
        {"role": "system", "content": "s"},
        {"role": "user", "content": "c"},
    ]
    assert render_chat(t, msgs) == (
        "<|user|>\na<|end|>\n<|assistant|>\nb<|end|><|system|>\ns<|end|>\n<|user|>\nc<|end|>\n<|assistant|>\n"
    )


def test_response_is_appended_to_templates_without_messages_or_response() -> None:
    t = parse("{{ .System }} {{ .Prompt }}")
    assert ollama_template(t).references("response") and not t.references("response")
    msgs = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "there"},
        {"role": "user", "content": "again"},
    ]
    assert render_chat(t, msgs) == " hithere again"
    default = parse(DEFAULT_TEMPLATE)
    assert render_generate(default, prompt="hello", system="ignored by the template") == "hello"
    assert render_chat(default, msgs) == "hithereagain"
    # templates that use .Messages are left alone
    m = parse("{{ range .Messages }}{{ .Content }}{{ end }}")
    assert ollama_template(m) is m


@pytest.mark.parametrize(
    ("src", "want"),
    [
        ("A{{ .Response }}B{{ if .X }}C{{ end }}", '"A"{{.Response}}'),
        ("{{ if .Prompt }}P{{ .Response }}Q{{ end }}R", '{{if .Prompt}}"P"{{.Response}}{{end}}'),
        ("{{ if .Response }}x{{ end }}{{ .Response }}y", '{{if .Response}}"x"{{end}}{{.Response}}'),
        ('{{ printf "%s%s" .Response "tail" }}z', '{{printf "%s%s" .Response}}'),
        ("{{ .Prompt }}", "{{.Prompt}}"),
    ],
)
def test_cut_at_response(src: str, want: str) -> None:
    assert str(cut_at_response(parse(src)).root) == want


def test_missing_keys_print_no_value_like_ollama() -> None:
    # Ollama executes with map[string]any and missingkey=zero: absent keys print "<no value>"
    t = parse("{{ range .Messages }}{{ end }}[{{ .Prompt }}]{{ if .Suffix }}x{{ end }}")
    assert render_chat(t, [{"role": "user", "content": "q"}]) == "[<no value>]"


# ---------------------------------------------------------------------------------------------------------------
# /api/generate


def test_generate_fill_in_the_middle() -> None:
    t = TEMPLATES["qwen2.5"]
    assert (
        render_generate(t, prompt="def f(", suffix="return 1")
        == "<|fim_prefix|>def f(<|fim_suffix|>return 1<|fim_middle|>"
    )
    # an empty prompt with a suffix is not FIM in Ollama: it renders an empty chat (no .Suffix in that map)
    assert render_generate(t, prompt="", suffix="x") == "<|im_start|>assistant\n"


def test_generate_builds_a_chat() -> None:
    t = TEMPLATES["qwen2.5"]
    history = [{"role": "user", "content": "m1"}, {"role": "assistant", "content": "m2"}]
    assert render_generate(t, prompt="P", system="S", messages=history) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nm1<|im_end|>\n<|im_start|>assistant\nm2<|im_end|>\n"
        "<|im_start|>user\nP<|im_end|>\n<|im_start|>assistant\n"
    )
    assert render_generate(TEMPLATES["phi-3-legacy"], prompt="P", system="S") == (
        "<|system|>\nS<|end|>\n<|user|>\nP<|end|>\n<|assistant|>\n"
    )


def test_execute_values_matches_ollama_execute() -> None:
    t = parse("{{ if .Suffix }}<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>{{ else }}{{ .Prompt }}{{ end }}")
    assert execute_values(t, messages=[{"role": "user", "content": "hello"}]) == "hello"
    assert execute_values(t, prompt="def add(", suffix="return x") == "<PRE> def add( <SUF>return x <MID>"


# ---------------------------------------------------------------------------------------------------------------
# Speed and robustness


MESSAGE = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["system", "user", "assistant", "tool"]),
        "content": st.text(max_size=40),
    },
    optional={
        "thinking": st.text(max_size=10),
        "tool_calls": st.lists(
            st.fixed_dictionaries(
                {
                    "function": st.fixed_dictionaries(
                        {
                            "name": st.text(max_size=8),
                            "arguments": st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5)),
                        }
                    )
                }
            ),
            max_size=2,
        ),
        "images": st.lists(st.binary(max_size=4), max_size=2),
    },
)


@settings(max_examples=150, deadline=None)
@given(st.lists(MESSAGE, min_size=1, max_size=8), st.sampled_from([None, True, False]), st.booleans())
def test_every_fixture_renders_any_conversation(msgs: list[dict[str, Any]], think: bool | None, tools: bool) -> None:
    for name, t in TEMPLATES.items():
        out = render_chat(t, msgs, tools=[WEATHER_TOOL] if tools else None, think=think)
        assert isinstance(out, str), name
    chatml = render_chat(TEMPLATES["chatml"], msgs)
    for m in msgs:
        assert m["content"] in chatml
