"""One turn of a chat with the server, shared by ``corral run`` and its interactive session: the request's
options, loading the model, streaming an answer onto the terminal, and a user message with its attached files."""

from __future__ import annotations

import base64
import json
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from corral.cli.client import Client, ClientError
from corral.cli.display import ResponseWriter, metrics_summary
from corral.cli.progress import Spinner, is_terminal
from corral.inference.images import sniff


@dataclass
class RunOptions:
    """Everything that shapes a chat request, shared by one-shot runs and the REPL (which edits it)."""

    model: str
    parent_model: str = ""
    prompt: str = ""
    messages: list[dict[str, Any]] = field(default_factory=list)
    word_wrap: bool = True
    format: str = ""
    system: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    multimodal: bool = False
    keep_alive: str | int | None = None
    think: bool | str | None = None
    think_explicit: bool = False
    hide_thinking: bool = False
    verbose: bool = False
    insecure: bool = False


def format_field(text: str) -> str | dict[str, Any] | None:
    """``--format``: ``json``, or a JSON schema given inline; anything else goes as-is for the server to judge."""
    if not text:
        return None
    if text == "json":
        return "json"
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, dict) else text


def chat_body(opts: RunOptions, messages: list[dict[str, Any]]) -> dict[str, Any]:
    body: dict[str, Any] = {"model": opts.model, "messages": messages, "stream": True}
    fmt = format_field(opts.format)
    if fmt is not None:
        body["format"] = fmt
    if opts.options:
        body["options"] = dict(opts.options)
    if opts.think is not None:
        body["think"] = opts.think
    if opts.keep_alive is not None:
        body["keep_alive"] = opts.keep_alive
    return body


def terminal_width(stream: TextIO) -> int | None:
    if not is_terminal(stream):
        return None
    return shutil.get_terminal_size((80, 24)).columns


def load_model(client: Client, opts: RunOptions) -> None:
    """Load (or, with keep_alive 0, unload) the model with an empty chat; a spinner shows on a terminal."""
    body: dict[str, Any] = {"model": opts.model, "messages": []}
    if opts.keep_alive is not None:
        body["keep_alive"] = opts.keep_alive
    if opts.think is not None:
        body["think"] = opts.think  # an unsupported thinking mode fails now, not after the first prompt
    with Spinner():
        for _ in client.chat(body):
            pass


def chat(
    client: Client, opts: RunOptions, *, out: TextIO | None = None, interactive: bool = False
) -> dict[str, Any] | None:
    """Stream one answer to ``opts.messages`` onto ``out``; return the assistant message, or ``None`` when the
    user pressed Ctrl-C in the REPL (in a one-shot run Ctrl-C propagates and the CLI exits 130)."""
    out = out or sys.stdout
    ansi = is_terminal(out)
    width = terminal_width(out) if opts.word_wrap else None
    writer = ResponseWriter(out, ansi=ansi, wrap_width=width, hide_thinking=opts.hide_thinking)
    final: dict[str, Any] | None = None
    spinner = Spinner().start()
    try:
        for chunk in client.chat(chat_body(opts, opts.messages)):
            message = chunk.get("message") or {}
            content = str(message.get("content") or "")
            if content or not opts.hide_thinking:
                spinner.stop()
            writer.write(content, str(message.get("thinking") or ""), message.get("tool_calls") or None)
            if chunk.get("done"):
                final = chunk
    except KeyboardInterrupt:
        spinner.stop()
        writer.finish()
        if not interactive:
            raise
        out.write("\n")
        out.flush()
        return None
    finally:
        spinner.stop()
    writer.finish()
    if opts.messages:
        out.write("\n\n")
        out.flush()
    if opts.verbose and final is not None:
        sys.stderr.write(metrics_summary(final))
        sys.stderr.flush()
    reply: dict[str, Any] = {"role": "assistant", "content": writer.content}
    if writer.thinking_text:
        reply["thinking"] = writer.thinking_text
    return reply


_FILE_RE = re.compile(r"(?:[a-zA-Z]:)?(?:\./|/|\\)[\S\\ ]+?\.(?i:jpg|jpeg|png|gif|bmp|webp|wav)\b")
_UNESCAPE = {"\\ ": " ", "\\(": "(", "\\)": ")", "\\[": "[", "\\]": "]", "\\{": "{", "\\}": "}", "\\$": "$",
             "\\&": "&", "\\;": ";", "\\'": "'", "\\\\": "\\", "\\*": "*", "\\?": "?"}
_MAX_MEDIA = 100 * 1024 * 1024


def _media_kind(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "audio"
    kind = sniff(data)
    if kind == "webp":
        raise ClientError("WebP images are not supported: convert it to PNG or JPEG")
    return None if kind is None else "image"


def _read(path: str) -> bytes:
    """A named file's bytes, or a one-line reason it cannot be had."""
    file = Path(path)
    try:
        if file.stat().st_size > _MAX_MEDIA:
            raise ClientError(f"file size exceeds maximum limit (100MB): {path}")
        return file.read_bytes()
    except FileNotFoundError:
        raise ClientError(f"couldn't read image '{path}': no such file") from None
    except IsADirectoryError:
        raise ClientError(f"couldn't read image '{path}': it is a directory") from None
    except OSError as exc:
        raise ClientError(f"couldn't read image '{path}': {exc.strerror or exc}") from None


def extract_media(text: str) -> tuple[str, list[str]]:
    """Find image/audio file paths in a prompt, read them, and return the prompt without them plus the files as
    base64 (Ollama's multimodal input). A named file that is missing, unreadable or not an image is an error (Ollama
    leaves a missing one in the text, and the model then answers about a picture it never saw)."""
    images: list[str] = []
    for raw in _FILE_RE.findall(text):
        path = raw
        for escaped, plain in _UNESCAPE.items():
            path = path.replace(escaped, plain)
        data = _read(path)
        kind = _media_kind(data)
        if kind is None:
            raise ClientError(f"invalid image type: {path} (supported: PNG, JPEG, GIF or BMP)")
        print(f"Added {kind} '{path}'", file=sys.stderr)
        text = text.replace(raw, "")
        images.append(base64.b64encode(data).decode("ascii"))
    return text.strip(), images


def user_message(opts: RunOptions, text: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "user", "content": text}
    if opts.multimodal:
        message["content"], images = extract_media(text)
        if images:
            message["images"] = images
    return message
