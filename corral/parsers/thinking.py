"""Thinking traces on the Go-template path: infer the tags from the template, split the streamed output.

Ollama (``thinking/template.go``, ``thinking/parser.go``) finds the text that a template wraps around
``{{ .Thinking }}`` inside the loop over ``.Messages`` and treats it as the tag pair the model writes its reasoning
in, e.g. ``<think>``/``</think>``.  The parser then splits the output stream: a response that starts with the open
tag (after whitespace) is thinking up to the close tag and content after it; any other response is all content.
"""

from __future__ import annotations

from collections.abc import Callable

from corral.templates.gotemplate import (
    ActionNode,
    BranchNode,
    CommandNode,
    FieldNode,
    ListNode,
    Node,
    PipeNode,
    RangeNode,
    Template,
    TemplateNode,
    TextNode,
)

__all__ = ["ThinkingParser", "infer_thinking_tags", "overlap"]


def _children(n: Node) -> list[Node]:
    """The nodes Ollama's ``templateVisit`` descends into; everything else is a leaf."""
    if isinstance(n, ListNode):
        return list(n.nodes)
    if isinstance(n, BranchNode):
        return [c for c in (n.pipe, n.list, n.else_list) if c is not None]
    if isinstance(n, (ActionNode, TemplateNode)):
        return [n.pipe] if n.pipe is not None else []
    if isinstance(n, PipeNode):
        return list(n.cmds)
    if isinstance(n, CommandNode):
        return list(n.args)
    return []


def _walk(n: Node, enter: Callable[[Node, list[Node]], None], ancestors: list[Node]) -> None:
    """Depth-first, parents before children, with the chain of ancestors (``n`` last) at hand."""
    ancestors.append(n)
    enter(n, ancestors)
    for c in _children(n):
        _walk(c, enter, ancestors)
    ancestors.pop()


def _range_uses_field(r: RangeNode, field: str) -> bool:
    found = False

    def enter(n: Node, _: list[Node]) -> None:
        nonlocal found
        if isinstance(n, FieldNode) and n.ident and n.ident[0] == field:
            found = True

    _walk(r.pipe, enter, [])
    return found


def infer_thinking_tags(tmpl: Template) -> tuple[str, str] | None:
    """Ollama's InferTags: inside {{ range .Messages }}, find {{ .Thinking }}; in the nearest enclosing list, the first
    and last text nodes (trimmed) are the open and close tags, e.g. ("<think>", "</think>"). None if the template has
    no .Thinking (or the tags cannot be inferred: Ollama then turns thinking off, so one tag alone is no use).

    As in Ollama, every ``.Thinking`` reference is looked at in template order and the last one that sits in a
    list starting (or ending) with text wins; this is what makes ``{{ if .Thinking }}<think>{{ .Thinking }}</think>``
    give the inner pair rather than the text around the ``if``."""
    opening = closing = ""

    def enter(n: Node, ancestors: list[Node]) -> None:
        nonlocal opening, closing
        if not (isinstance(n, FieldNode) and n.ident and n.ident[0] == "Thinking"):
            return
        rng = next((a for a in reversed(ancestors) if isinstance(a, RangeNode)), None)
        if rng is None or not _range_uses_field(rng, "Messages"):
            return
        lst = next((a for a in reversed(ancestors) if isinstance(a, ListNode)), None)
        if lst is None or not lst.nodes:
            return
        first, last = lst.nodes[0], lst.nodes[-1]
        if isinstance(first, TextNode):
            opening = first.text.strip()
        if isinstance(last, TextNode):
            closing = last.text.strip()

    _walk(tmpl.root, enter, [])
    if opening and closing:
        return opening, closing
    return None


def overlap(s: str, tag: str) -> int:
    """Length of the longest suffix of ``s`` that is a proper prefix of ``tag``: the part of a tag that may be
    arriving split across chunks and so must be held back."""
    n = min(len(tag) - 1, len(s))
    if n <= 0:
        return 0
    first = tag[0]
    i = s.find(first, len(s) - n)
    while i >= 0:
        if tag.startswith(s[i:]):
            return len(s) - i
        i = s.find(first, i + 1)
    return 0


_LOOKING, _OPENED, _THINKING, _CLOSED, _DONE = range(5)


class ThinkingParser:
    """Splits a streamed response into (thinking, content), as Ollama's ``thinking.Parser`` does.

    Each :meth:`add` returns what can be emitted now; text that might still turn out to be (part of) a tag is held
    back until the next chunk decides it, so a tag split across chunks (``"<thi" + "nk>"``) is recognised.  The
    result does not depend on how the output is chunked.  Work per call is proportional to the chunk (plus at most
    a tag's length held back), never to the whole response."""

    __slots__ = ("_acc", "_lead", "_state", "close_tag", "open_tag")

    def __init__(self, open_tag: str, close_tag: str, *, prompt: str = "") -> None:
        """``prompt`` is the rendered prompt: if it ends with the open tag (after trimming whitespace), parsing starts
        inside the thinking part, as Ollama pre-feeds it."""
        if not open_tag or not close_tag:
            raise ValueError("thinking tags must not be empty")
        self.open_tag = open_tag
        self.close_tag = close_tag
        self._state = _LOOKING
        self._lead = ""  # whitespace before the open tag: content if the open tag never comes
        self._acc = ""  # text held back: a possible (partial) tag
        if prompt.rstrip().endswith(open_tag):
            self.add(open_tag)

    def add(self, text: str) -> tuple[str, str]:
        """Feed the next chunk of output; returns the (thinking, content) that can be emitted now."""
        thinking: list[str] = []
        content: list[str] = []
        state = self._state
        if state == _DONE:
            return "", text
        if state == _LOOKING:
            if not self._acc:
                stripped = text.lstrip()
                self._lead += text[: len(text) - len(stripped)]
                text = stripped
                if not text:
                    return "", ""
            acc = self._acc + text
            if acc.startswith(self.open_tag):
                self._lead = self._acc = ""
                state = _OPENED
                text = acc[len(self.open_tag) :]
            elif self.open_tag.startswith(acc):
                self._acc = acc
                return "", ""
            else:
                self._state = _DONE
                out = self._lead + acc
                self._lead = self._acc = ""
                return "", out
        if state == _OPENED:
            text = text.lstrip()
            if not text:
                self._state = _OPENED
                return "", ""
            state = _THINKING
        if state == _THINKING:
            acc = self._acc + text
            i = acc.find(self.close_tag)
            if i < 0:
                keep = overlap(acc, self.close_tag)
                self._acc = acc[len(acc) - keep :] if keep else ""
                self._state = _THINKING
                return acc[: len(acc) - keep], ""
            thinking.append(acc[:i])
            self._acc = ""
            text = acc[i + len(self.close_tag) :]
            state = _CLOSED
        if state == _CLOSED:
            text = text.lstrip()
            if text:
                state = _DONE
                content.append(text)
        self._state = state
        return "".join(thinking), "".join(content)

    def finish(self) -> tuple[str, str]:
        """End of stream: flush what was held back (a partial tag that never completed is plain text again)."""
        state, acc, lead = self._state, self._acc, self._lead
        self._acc = self._lead = ""
        if state == _LOOKING:
            self._state = _DONE
            return "", lead + acc
        if state == _THINKING:
            return acc, ""
        return "", ""
