"""Streaming parsers for model output on the Go-template path: thinking traces and tool calls.

On the native path llama-server parses both itself; when Corral renders an Ollama ``TEMPLATE`` it gets raw text
back, so it has to split it the way Ollama does: the tags are inferred from the template, and the parsers are fed
token by token and never hold back more than they must.
"""

from __future__ import annotations

from corral.parsers.thinking import ThinkingParser, infer_thinking_tags
from corral.parsers.tools import ToolCallParser, infer_tool_tag

__all__ = ["ThinkingParser", "ToolCallParser", "infer_thinking_tags", "infer_tool_tag"]
