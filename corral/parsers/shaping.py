"""Turn a rendered-path model's raw text into thinking, content and tool calls, as it streams.

Only the Go-template path needs this (the native path gets them parsed by the engine). The tags come from the
model's template (Ollama's inference rules, in ``corral/parsers``); a request that neither thinks nor offers tools
skips all of it, so plain chat pays nothing per token.
"""

from __future__ import annotations

import secrets
import string
from typing import Any

from corral.parsers.thinking import ThinkingParser, infer_thinking_tags
from corral.parsers.tools import ToolCallParser, infer_tool_tag
from corral.templates.gotemplate import Template

_ID_CHARS = string.ascii_lowercase + string.digits


def tool_call_id() -> str:
    """Ollama's ids on the rendered path: ``call_`` and eight characters of [a-z0-9]."""
    return "call_" + "".join(secrets.choice(_ID_CHARS) for _ in range(8))


class OutputShaper:
    def __init__(self, thinking: ThinkingParser | None, tools: ToolCallParser | None) -> None:
        self._thinking = thinking
        self._tools = tools

    @classmethod
    def for_request(cls, tmpl: Template | None, prompt: str, *, think: bool,
                    tools: list[dict[str, Any]] | None) -> OutputShaper | None:
        if tmpl is None:
            return None
        thinking = None
        if think:
            tags = infer_thinking_tags(tmpl)
            if tags is not None:
                thinking = ThinkingParser(tags[0], tags[1], prompt=prompt)
        tool_parser = None
        if tools:
            tag = infer_tool_tag(tmpl)
            if tag is not None:
                tool_parser = ToolCallParser(tag, tools)
        if thinking is None and tool_parser is None:
            return None
        return cls(thinking, tool_parser)

    def add(self, text: str) -> tuple[str, str, list[dict[str, Any]]]:
        """(thinking, content, calls) that can be emitted now."""
        thinking, content = self._thinking.add(text) if self._thinking else ("", text)
        return thinking, *self._content(content, final=False)

    def finish(self) -> tuple[str, str, list[dict[str, Any]]]:
        thinking, content = self._thinking.finish() if self._thinking else ("", "")
        return thinking, *self._content(content, final=True)

    def _content(self, content: str, *, final: bool) -> tuple[str, list[dict[str, Any]]]:
        if self._tools is None:
            return content, []
        text, calls = self._tools.add(content) if content else ("", [])
        if final:
            more_text, more_calls = self._tools.finish()
            text, calls = text + more_text, calls + more_calls
        for call in calls:
            call.setdefault("id", tool_call_id())
        return text, calls
