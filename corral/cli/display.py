"""Writing a model's streamed answer to the terminal: word wrap, the grey thinking block, tool calls, and the
``--verbose`` statistics. Pure text in, text out, so every rule is unit-testable without a terminal.

On a terminal the output matches Ollama's ``displayResponse``; when stdout is a pipe or file it is plain text:
no ANSI codes and no wrapping, so ``corral run m "..." > out.txt`` holds exactly the model's words.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TextIO

from corral.cli.format import display_width, go_duration

GREY = "\x1b[38;5;245m"
BOLD = "\x1b[1m"
RESET = "\x1b[0m"


class WordWrapper:
    """Wraps streamed text at word boundaries ``width - 5`` columns wide, as Ollama does, moving a word that
    would cross the edge to the next line (the word was already printed, so it is erased with ANSI codes)."""

    def __init__(self, width: int) -> None:
        self.limit = width - 5
        self.column = 0
        self.word = ""

    def feed(self, text: str) -> str:
        out: list[str] = []
        for ch in text:
            if ch in "\r\n":
                out.append(ch)
                self.column, self.word = 0, ""
                continue
            w = display_width(ch)
            if self.column + w > self.limit:
                if ch in " \t":
                    # the line is full exactly at a word boundary: the break replaces the space
                    out.append("\n")
                    self.column, self.word = 0, ""
                    continue
                word_width = display_width(self.word)
                if self.word and word_width + w <= self.limit:
                    out.append(f"\x1b[{word_width}D\x1b[K\n{self.word}{ch}")
                    self.column = word_width + w
                    self.word += ch
                else:
                    # a word longer than a line (a URL, say) is broken where it reaches the edge
                    out.append("\n" + ch)
                    self.column = w
                    self.word = ch if w < 2 else ""
                continue
            out.append(ch)
            self.column += w
            if ch in " \t" or w >= 2:
                self.word = ""
            else:
                self.word += ch
        return "".join(out)


def thinking_open(ansi: bool) -> str:
    text = "Thinking...\n"
    return GREY + BOLD + text + RESET + GREY if ansi else text


def thinking_close(ansi: bool) -> str:
    text = "...done thinking.\n\n"
    return GREY + BOLD + text + RESET if ansi else text


def tool_calls_text(tool_calls: list[Any]) -> str:
    """The CLI has no tools to run; it says what the model asked for, one line per call."""
    lines = []
    for call in tool_calls:
        function = call.get("function", {}) if isinstance(call, Mapping) else {}
        name = function.get("name", "")
        arguments = json.dumps(function.get("arguments", {}), ensure_ascii=False, separators=(",", ":"))
        lines.append(f"Model called a non-existent function '{name}()' with arguments: {arguments}\n")
    return "".join(lines)


class ResponseWriter:
    """Renders chat chunks (``message.content`` / ``.thinking`` / ``.tool_calls``) to ``out`` as they arrive."""

    def __init__(self, out: TextIO, *, ansi: bool, wrap_width: int | None, hide_thinking: bool = False) -> None:
        self.out = out
        self.ansi = ansi
        self.wrap_width = wrap_width if wrap_width and wrap_width >= 10 else None
        self.hide_thinking = hide_thinking
        self.thinking_open = False
        self.thinking_text = ""
        self.content = ""
        self._wrapper = self._new_wrapper()

    def _new_wrapper(self) -> WordWrapper | None:
        return WordWrapper(self.wrap_width) if self.wrap_width else None

    def _emit(self, text: str) -> None:
        if text:
            self.out.write(self._wrapper.feed(text) if self._wrapper else text)
            self.out.flush()

    def write(self, content: str = "", thinking: str = "", tool_calls: list[Any] | None = None) -> None:
        if thinking and not self.hide_thinking:
            if not self.thinking_open:
                self.out.write(thinking_open(self.ansi))
                self.thinking_open = True
            self.thinking_text += thinking
            self._emit(thinking)
        if self.thinking_open and (content or tool_calls):
            self.out.write(("" if self.thinking_text.endswith("\n") else "\n") + thinking_close(self.ansi))
            self.thinking_open = False
            self._wrapper = self._new_wrapper()
        self.content += content
        self._emit(content)
        if tool_calls:
            self.out.write(tool_calls_text(tool_calls))
        self.out.flush()

    def finish(self) -> None:
        """Close a thinking block the model never left, so the terminal's colour does not stay grey."""
        if self.thinking_open and self.ansi:
            self.out.write(RESET)
            self.out.flush()


def metrics_summary(final: Mapping[str, Any]) -> str:
    """``api.Metrics.Summary``: the ``--verbose`` block; a line appears only when its value is above zero."""
    lines: list[str] = []

    def num(key: str) -> int:
        value = final.get(key) or 0
        return int(value) if isinstance(value, int | float) else 0

    total, load = num("total_duration"), num("load_duration")
    p_count, p_dur = num("prompt_eval_count"), num("prompt_eval_duration")
    e_count, e_dur = num("eval_count"), num("eval_duration")
    if total > 0:
        lines.append(f"total duration:       {go_duration(total)}")
    if load > 0:
        lines.append(f"load duration:        {go_duration(load)}")
    if p_count > 0:
        lines.append(f"prompt eval count:    {p_count} token(s)")
    if p_dur > 0:
        lines.append(f"prompt eval duration: {go_duration(p_dur)}")
        lines.append(f"prompt eval rate:     {p_count / (p_dur / 1e9):.2f} tokens/s")
    if e_count > 0:
        lines.append(f"eval count:           {e_count} token(s)")
    if e_dur > 0:
        lines.append(f"eval duration:        {go_duration(e_dur)}")
        lines.append(f"eval rate:            {e_count / (e_dur / 1e9):.2f} tokens/s")
    return "".join(line + "\n" for line in lines)
