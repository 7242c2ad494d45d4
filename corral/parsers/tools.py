"""Tool calls on the Go-template path: infer the tag from the template, pull calls out of the streamed output.

Ollama (``tools/template.go``, ``tools/tools.go``) takes the text a template prints first when an assistant message
has ``.ToolCalls`` (``<tool_call>``, ``[TOOL_CALLS] [``, or ``{`` for bare JSON) as the tag that starts tool calls
in the model's output.  Text before the tag is content; after it, each complete JSON object that names a provided
tool becomes a call.  This module follows that design, with these deliberate differences, each because Ollama's
behaviour loses calls or garbles them:

- a ``{{ "literal" }}`` action counts as text when looking for the tag (deepseek's template starts its tool calls
  with ``{{ "\\n" }}``; Ollama stops there and falls back to ``{``, so it never parses deepseek calls);
- an object's own ``name`` (or command-r's ``tool_name``) wins over a tool name merely mentioned elsewhere, and an
  object that names a tool that was not provided is not a call;
- a call object without ``arguments`` is a call with no arguments (Ollama drops it);
- for bare ``{``/``[`` tags, non-whitespace text anywhere before the tag turns parsing off, however the output is
  chunked (Ollama's decision depends on where the chunks split);
- at the end of the stream, text that was held back but did not turn into a call is returned as content, minus
  the closing syntax (``</tool_call>``, ``]``, special tokens) that follows calls.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from corral.parsers.thinking import overlap
from corral.templates.gotemplate import (
    ActionNode,
    FieldNode,
    IfNode,
    ListNode,
    Node,
    RangeNode,
    StringNode,
    Template,
    TextNode,
    VariableNode,
    WithNode,
)

__all__ = ["ToolCallParser", "infer_tool_tag", "jinja_tool_call_prefix", "tool_call_prefix"]


# ---------------------------------------------------------------------------------------------------------------
# Tag inference


def _is_tool_calls_if(n: IfNode) -> bool:
    return any(isinstance(a, FieldNode) and "ToolCalls" in a.ident for c in n.pipe.cmds for a in c.args)


def _find_first(nodes: Sequence[Node], match: Callable[[Node], bool]) -> Node | None:
    """The first node ``match`` accepts, searching branch bodies (then else branches) in order, as Ollama's
    ``findToolCallNode`` walks the tree."""
    for n in nodes:
        if match(n):
            return n
        found: Node | None = None
        if isinstance(n, (IfNode, RangeNode, WithNode)):
            found = _find_first(n.list.nodes, match)
            if found is None and n.else_list is not None:
                found = _find_first(n.else_list.nodes, match)
        elif isinstance(n, ListNode):
            found = _find_first(n.nodes, match)
        if found is not None:
            return found
    return None


def _find_tool_calls_if(nodes: Sequence[Node]) -> IfNode | None:
    """The first ``{{ if … .ToolCalls … }}``."""
    found = _find_first(nodes, lambda n: isinstance(n, IfNode) and _is_tool_calls_if(n))
    return found if isinstance(found, IfNode) else None


def _literal(n: ActionNode) -> str | None:
    """The text a ``{{ "literal" }}`` action prints, or None for any other action."""
    p = n.pipe
    if p.decl or len(p.cmds) != 1 or len(p.cmds[0].args) != 1:
        return None
    arg = p.cmds[0].args[0]
    return arg.text if isinstance(arg, StringNode) else None


def _first_text(nodes: Sequence[Node]) -> str | None:
    """First non-whitespace text, depth first; a nested block or a (non-literal) action ends the search, so text
    printed after the calls themselves is never mistaken for the tag."""
    for n in nodes:
        if isinstance(n, TextNode):
            if n.text.strip():
                return n.text
        elif isinstance(n, ActionNode):
            lit = _literal(n)
            if lit is None:
                return None
            if lit.strip():
                return lit
        elif isinstance(n, (IfNode, RangeNode, WithNode)):
            found = _first_text(n.list.nodes)
            if found is None and n.else_list is not None:
                found = _first_text(n.else_list.nodes)
            return found
        elif isinstance(n, ListNode):
            found = _first_text(n.nodes)
            if found is not None:
                return found
    return None


def infer_tool_tag(tmpl: Template) -> str | None:
    """Ollama's tag detection: find the first {{ if … .ToolCalls … }} node, the first non-whitespace text node inside
    it, cut before '{' and trimmed (e.g. "<tool_call>", "[TOOL_CALLS]"); "{" when none is found; None if the
    template has no .ToolCalls at all. Where no ``if`` guards the calls (Corral's builtin qwen prints them with a bare
    ``range $m.ToolCalls``), the range is read instead, so the tag is still found."""
    if not tmpl.references("ToolCalls"):
        return None
    node: IfNode | RangeNode | None = _find_tool_calls_if(tmpl.root.nodes) or _find_tool_calls_range(tmpl.root.nodes)
    text = _first_text(node.list.nodes) if node is not None else None
    if text is None:
        return "{"
    tag = text.replace("\r\n", "\n").split("{", 1)[0].strip()
    return tag or "{"


def tool_call_prefix(tmpl: Template) -> str:
    """The text the template prints before a call's JSON object, as the model would write it (``<tool_call>\\n``,
    ``[TOOL_CALLS] [``): what a forced tool call appends to the prompt. Unlike :func:`infer_tool_tag` it keeps
    the whitespace after the tag; ``""`` when calls are bare JSON or the template shows none."""
    if not tmpl.references("ToolCalls"):
        return ""
    node: IfNode | RangeNode | None = _find_tool_calls_if(tmpl.root.nodes) or _find_tool_calls_range(tmpl.root.nodes)
    text = _first_text(node.list.nodes) if node is not None else None
    if text is None:
        return ""
    return text.replace("\r\n", "\n").split("{", 1)[0].lstrip()


def _find_tool_calls_range(nodes: Sequence[Node]) -> RangeNode | None:
    """The first ``{{ range … ToolCalls }}`` (``.ToolCalls`` or ``$m.ToolCalls``): where templates without an
    ``if .ToolCalls`` (Corral's builtin qwen) print each call."""
    found = _find_first(nodes, lambda n: isinstance(n, RangeNode) and any(
        isinstance(a, (FieldNode, VariableNode)) and "ToolCalls" in a.ident for c in n.pipe.cmds for a in c.args))
    return found if isinstance(found, RangeNode) else None


def jinja_tool_call_prefix(chat_template: str) -> str:
    """The same for a GGUF's Jinja template (the native path), by the markers of the common formats."""
    for marker, prefix in (("<tool_call>", "<tool_call>\n"), ("[TOOL_CALLS]", "[TOOL_CALLS]")):
        if marker in chat_template:
            return prefix
    return ""


# ---------------------------------------------------------------------------------------------------------------
# Parsing

_LOOKING, _CALLING, _DONE = range(3)

_SCAN_OUT = re.compile(r'[{}"\[\]]')
_SCAN_IN = re.compile(r'["\\]')
_CLOSERS = re.compile(r"(?:\s|</[^\s<>]{1,64}>|<[|｜][^\s<>]{0,64}?[|｜]>|\[/[^\s\[\]]{1,64}\]|```|[,\]])*")
"""Syntax that follows calls (``</tool_call>``, ``<｜tool▁calls▁end｜>``, ``[/TOOL_CALLS]``, a code fence, the end
of a JSON list): dropped from leftovers so it never shows up as content."""


def _tool_name(tool: Any) -> str | None:
    if hasattr(tool, "model_dump"):
        tool = tool.model_dump()
    if not isinstance(tool, Mapping):
        return None
    fn = tool.get("function")
    name = fn.get("name") if isinstance(fn, Mapping) else tool.get("name")
    return name if isinstance(name, str) and name else None


def _as_object(v: Any) -> dict[str, Any] | None:
    """Arguments as an object: an object, a JSON string holding one, or nothing at all (no arguments)."""
    if isinstance(v, dict):
        return v
    if v is None or v == "":
        return {}
    if isinstance(v, str):
        try:
            parsed = json.loads(v)
        except (ValueError, RecursionError):
            return None
        return parsed if isinstance(parsed, dict) else None
    return None


def _find_arguments(obj: dict[str, Any], name: str) -> tuple[dict[str, Any] | None, bool]:
    """Ollama's ``findObject``: (arguments, whether this object decided them)."""
    for key in ("name", "tool_name"):
        v = obj.get(key)
        if isinstance(v, str) and name in v:
            for k in ("arguments", "parameters"):
                if k in obj:
                    return _as_object(obj[k]), True
            return {}, True
    if name in obj:
        args = _as_object(obj[name])
        if args is not None:
            return args, True
    for v in obj.values():
        for child in v if isinstance(v, list) else (v,):
            if isinstance(child, dict):
                args, found = _find_arguments(child, name)
                if found:
                    return args, True
    return None, False


def _explicit_name(obj: dict[str, Any]) -> str | None:
    """The tool name an object gives itself: ``name``/``tool_name``, or ``function.name`` (OpenAI's shape)."""
    for key in ("name", "tool_name"):
        v = obj.get(key)
        if isinstance(v, str):
            return v
    fn = obj.get("function")
    if isinstance(fn, dict) and isinstance(fn.get("name"), str):
        return str(fn["name"])
    return None


class ToolCallParser:
    """Splits a streamed response into content and tool calls, given the template's tag and the request's tools.

    Content before the tag is returned at once (minus a possible partial tag at the end of the chunk); from the tag
    on, text is held until it becomes calls, each returned as soon as its JSON object closes, so call syntax never
    leaks into content.  The concatenated content and the calls do not depend on how the output is chunked.  JSON
    is tracked incrementally (depth, strings, escapes), so each :meth:`add` scans only the new text."""

    __slots__ = (
        "_bare",
        "_depth",
        "_esc",
        "_held",
        "_in_str",
        "_junk",
        "_len",
        "_list",
        "_list_depth",
        "_n",
        "_names",
        "_obj",
        "_pieces",
        "_state",
        "tag",
    )

    def __init__(self, tag: str, tools: list[dict[str, Any]]) -> None:
        """``tag`` from :func:`infer_tool_tag`; ``tools`` the request's API-shaped tool definitions (only their
        names matter: a call must name one of them).  Without tools everything is content."""
        self.tag = tag or "{"
        names: list[str] = []
        for t in tools:
            name = _tool_name(t)
            if name is not None and name not in names:
                names.append(name)
        self._names = names
        self._bare = self.tag in ("{", "[")
        self._list = self.tag == "["
        self._state = _LOOKING if names else _DONE
        self._held = ""  # looking: a possible partial tag at the end of the text so far
        self._pieces: list[str] = []  # calling: the text from the tag (or the end of the last call) on
        self._junk: list[str] = []  # calling: objects since the last call that were not calls (content if no call)
        self._len = 0
        self._n = 0  # calls returned so far: the next call's index
        self._depth = 0  # JSON object depth
        self._list_depth = 0  # JSON list depth outside objects (bare "[" tag only)
        self._in_str = False
        self._esc = False
        self._obj = -1  # where the open top-level object starts

    @property
    def calls(self) -> int:
        """How many calls were returned so far."""
        return self._n

    def add(self, text: str) -> tuple[str, list[dict[str, Any]]]:
        """Feed the next chunk of output; returns the content that can be emitted now and the calls completed."""
        if self._state == _DONE:
            return text, []
        if self._state == _CALLING:
            return self._feed(text)
        if self._bare:
            rest = text.lstrip()
            if not rest:
                return text, []
            if rest[0] != self.tag:
                self._state = _DONE
                return text, []
            self._state = _CALLING
            content, calls = self._feed(rest)
            return text[: len(text) - len(rest)] + content, calls
        s = self._held + text
        i = s.find(self.tag)
        if i < 0:
            keep = overlap(s, self.tag)
            self._held = s[len(s) - keep :] if keep else ""
            return s[: len(s) - keep], []
        self._held = ""
        self._state = _CALLING
        content, calls = self._feed(s[i:])
        return s[:i] + content, calls

    def finish(self) -> tuple[str, list[dict[str, Any]]]:
        """End of stream: return what was held back and did not become a call as content."""
        state = self._state
        self._state = _DONE
        if state == _LOOKING:
            held, self._held = self._held, ""
            return held, []
        if state != _CALLING:
            return "", []
        s = "".join(self._junk) + "".join(self._pieces)
        self._pieces, self._len, self._junk = [], 0, []
        if self._n == 0:
            return s, []
        m = _CLOSERS.match(s)
        return s[m.end() if m else 0 :], []

    # -- internals -------------------------------------------------------------------------------------------

    def _feed(self, text: str) -> tuple[str, list[dict[str, Any]]]:
        base = self._len
        self._pieces.append(text)
        self._len += len(text)
        i = self._scan(text, 0, base)
        if i < 0:
            return "", []
        s = "".join(self._pieces)
        i += base
        calls: list[dict[str, Any]] = []
        while i >= 0:
            if s[i] == "}":
                start, end = self._obj, i + 1
                self._obj = -1
                call = self._call(s, start, end)
                if call is not None:
                    calls.append(call)
                    self._junk.clear()
                elif self._bare and self._n == 0:
                    return self._give_up(s)
                else:
                    self._junk.append(s[:end])
                s, i = s[end:], 0  # the held text always starts after the last object
            else:  # the bare "[" list closed
                if self._n == 0:
                    return self._give_up(s)
                i += 1
            i = self._scan(s, i, 0)
        self._pieces, self._len = ([s] if s else []), len(s)
        return "", calls

    def _give_up(self, s: str) -> tuple[str, list[dict[str, Any]]]:
        """Bare JSON that is not a tool call: all of it is content, and so is everything after it."""
        self._state = _DONE
        held = "".join(self._junk) + s
        self._pieces, self._len, self._junk = [], 0, []
        return held, []

    def _scan(self, s: str, i: int, base: int) -> int:
        """Advance the JSON tracker over ``s[i:]``; the index where a top-level object (or the bare list) closes,
        or -1 at the end of ``s``.  ``base`` is the offset of ``s`` in the held text."""
        n = len(s)
        while i < n:
            if self._in_str:
                if self._esc:
                    self._esc = False
                    i += 1
                    continue
                m = _SCAN_IN.search(s, i)
                if m is None:
                    return -1
                i = m.start()
                if s[i] == "\\":
                    self._esc = True
                else:
                    self._in_str = False
                i += 1
                continue
            m = _SCAN_OUT.search(s, i)
            if m is None:
                return -1
            i = m.start()
            c = s[i]
            if c == '"':
                # quotes only delimit strings inside JSON; in prose around calls they are just text
                self._in_str = bool(self._depth or self._list_depth)
            elif c == "{":
                if self._depth == 0:
                    self._obj = base + i
                self._depth += 1
            elif c == "}":
                if self._depth:
                    self._depth -= 1
                    if self._depth == 0:
                        return i
            elif self._list and self._depth == 0:
                if c == "[":
                    self._list_depth += 1
                elif self._list_depth:
                    self._list_depth -= 1
                    if self._list_depth == 0:
                        return i
            i += 1
        return -1

    def _pick_name(self, obj: dict[str, Any], s: str, start: int, end: int) -> str | None:
        """Which provided tool the object at ``s[start:end]`` calls: its own name when that is a provided tool;
        else a tool named just before it (deepseek's ``function<｜tool▁sep｜>NAME`` then JSON); else a tool within
        the name it gives itself (``functions.get_weather``), or none if it names another tool; else the first
        (then longest) tool name inside it."""
        own = _explicit_name(obj)
        if own is not None and own in self._names:
            return own
        name = self._earliest(s, 0, start)
        if name is not None:
            return name
        if own is not None:
            return self._earliest(own, 0, len(own))
        return self._earliest(s, start, end)

    def _earliest(self, s: str, start: int, end: int) -> str | None:
        best: str | None = None
        best_pos = end
        for name in self._names:
            p = s.find(name, start, end)
            if p >= 0 and (p < best_pos or (p == best_pos and best is not None and len(name) > len(best))):
                best, best_pos = name, p
        return best

    def _call(self, s: str, start: int, end: int) -> dict[str, Any] | None:
        try:
            data = json.loads(s[start:end])
            if not isinstance(data, dict):
                return None
            name = self._pick_name(data, s, start, end)
            if name is None:
                return None
            args, found = _find_arguments(data, name)
        except (ValueError, RecursionError):
            return None
        if not found:
            args = data
        if args is None:
            return None
        call = {"function": {"index": self._n, "name": name, "arguments": args}}
        self._n += 1
        return call
