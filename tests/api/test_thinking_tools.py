"""Thinking and tool calls on the rendered (Go template) path, through the real server."""

from __future__ import annotations

import httpx
import ollama
import pytest

from corral.store import manifest as mf
from tests.conftest import NO_TOOLS, ServerProcess, derive, no_tools_model

pytestmark = pytest.mark.e2e

# ChatML with a thinking slot: when thinking is on, the prompt pre-feeds the open tag, as Qwen3-style templates do.
THINKING_TEMPLATE = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ if $.Think }}<think>
{{ end }}"""

TOOLS_TEMPLATE = """{{- if .Tools }}<|im_start|>system
You may call these tools: {{ json .Tools }}
Reply with <tool_call>{"name": ..., "arguments": {...}}</tool_call>.<|im_end|>
{{ end }}
{{- range .Messages }}<|im_start|>{{ .Role }}
{{ if .ToolCalls }}{{ range .ToolCalls }}<tool_call>{"name": "{{ .Function.Name }}", "arguments": \
{{ json .Function.Arguments }}}</tool_call>{{ end }}{{ else }}{{ .Content }}{{ end }}<|im_end|>
{{ end }}<|im_start|>assistant
"""

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                            "parameters": {"type": "object", "required": ["city"],
                                                           "properties": {"city": {"type": "string"}}}}}


def test_thinking_is_split_and_streamed_separately(server: ServerProcess) -> None:
    derive(server, "thinky", add={mf.MEDIA_TEMPLATE: THINKING_TEMPLATE.encode()}, drop=(mf.MEDIA_SYSTEM,))
    client = ollama.Client(host=server.url)
    assert "thinking" in (client.show("thinky").capabilities or [])
    msgs = [{"role": "user", "content": "What is 3 + 4?"}]
    r = client.chat(model="thinky", messages=msgs, think=True, options={"temperature": 0, "num_predict": 24})
    # The prompt ends inside <think>, so what the model writes first is thinking.
    assert r.message.thinking and "<think>" not in r.message.thinking
    chunks = list(client.chat(model="thinky", messages=msgs, think=True, stream=True,
                              options={"temperature": 0, "num_predict": 24}))
    assert "".join(c.message.thinking or "" for c in chunks) == r.message.thinking
    off = client.chat(model="thinky", messages=msgs, think=False, options={"temperature": 0, "num_predict": 24})
    assert not off.message.thinking and off.message.content


def test_tools_need_a_tools_template(server: ServerProcess) -> None:
    r = httpx.post(server.url + "/api/chat", json={
        "model": no_tools_model(server), "messages": [{"role": "user", "content": "weather?"}], "tools": [WEATHER]})
    assert r.status_code == 400 and r.json()["error"] == f'"{NO_TOOLS}" does not support tools'


def test_tool_round_trip_plumbing(server: ServerProcess) -> None:
    derive(server, "tooly", add={mf.MEDIA_TEMPLATE: TOOLS_TEMPLATE.encode()}, drop=(mf.MEDIA_SYSTEM,))
    client = ollama.Client(host=server.url)
    assert "tools" in (client.show("tooly").capabilities or [])
    first = client.chat(model="tooly", tools=[WEATHER], options={"temperature": 0, "num_predict": 60},
                        messages=[{"role": "user", "content": "What is the weather in Paris?"}])
    assert first.done
    for call in first.message.tool_calls or []:  # a 135M model may or may not call; what it calls must be whole
        assert call.function.name == "get_weather" and isinstance(call.function.arguments, dict)
    # Feed a call and its result back; the template renders them and the model answers.
    history = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": "",
         "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "tool_name": "get_weather", "content": "18 degrees and sunny"},
    ]
    final = client.chat(model="tooly", tools=[WEATHER], messages=history,
                        options={"temperature": 0, "num_predict": 40})
    assert final.done and (final.message.content or final.message.tool_calls)
