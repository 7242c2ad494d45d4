"""Recognise a GGUF's Jinja chat template as one of Corral's builtin Go templates, by rendering both.

Ollama matches ``tokenizer.chat_template`` against known Jinja texts by edit distance. Corral instead renders a few
probe conversations with the model's own template (sandboxed Jinja, as Hugging Face's ``apply_chat_template``
does) and with each builtin Go template, and accepts a builtin only when every prompt comes out byte for byte the
same. A default system prompt that the Jinja template inserts when the conversation has none (Qwen's "You are
Qwen...", SmolLM's "You are a helpful AI assistant named SmolLM...") is recovered and returned, so that the
created model renders that same prompt through its SYSTEM layer. A builtin is also refused when it would lose a
capability the Jinja template has (tools, thinking): Ollama makes the same choice at run time, preferring the GGUF
template when it can do more. No match means no TEMPLATE layer, and the engine applies the Jinja template itself.

The Jinja template comes from an uploaded file, so it runs in a child process (``python -m
corral.templates.detect``) with a memory and CPU limit and a wall-clock timeout: a hostile template can fail
detection, never hang or exhaust the server. This module imports nothing heavy at import time, so that child
starts quickly.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from corral.templates.gotemplate import Template

log = logging.getLogger("corral.templates.detect")

# Builtin templates tried, in order of preference when several render the same prompts.
NAMES = ("chatml", "llama3", "gemma", "mistral", "phi3", "zephyr", "qwen", "deepseek")
MAX_TEMPLATE_CHARS = 256 * 1024
TIMEOUT = 10.0  # seconds for the child that renders the Jinja template
_MEMORY_LIMIT = 1 << 30
_CPU_SECONDS = 10
_SENTINEL = "\u2063corral-system-probe\u2063"

_SYSTEM = {"role": "system", "content": "You are a terse assistant."}
_CONVERSATIONS: tuple[tuple[dict[str, str], ...], ...] = (
    ({"role": "user", "content": "Hello there"},),
    ({"role": "user", "content": "Hello there"}, {"role": "assistant", "content": "Hi! How can I help?"},
     {"role": "user", "content": "Tell me a joke"}),
)


@dataclass(frozen=True)
class Detected:
    """A builtin Go template that renders the model's prompts exactly as its Jinja template does."""

    name: str
    template: str
    params: dict[str, Any] = field(default_factory=dict)  # the builtin's stop tokens
    system: str = ""  # the default system prompt the Jinja template inserts; "" when it inserts none


def builtin(name: str) -> tuple[str, dict[str, Any]]:
    """A builtin Go template's text and its params (``<name>.gotmpl`` and ``<name>.json``)."""
    import importlib.resources

    base = importlib.resources.files("corral.templates") / "builtin"
    text = (base / f"{name}.gotmpl").read_text(encoding="utf-8")
    params_file = base / f"{name}.json"
    params = json.loads(params_file.read_text(encoding="utf-8")) if params_file.is_file() else {}
    return text, params


def jinja_capabilities(chat_template: str) -> set[str]:
    """Ollama's reading of a Jinja template (``tools``/``tool_call`` -> tools, ``<think>`` and ``</think>`` ->
    thinking), the same rule :mod:`corral.store.model` applies on the native path."""
    caps = set()
    if "tools" in chat_template or "tool_call" in chat_template:
        caps.add("tools")
    if "<think>" in chat_template and "</think>" in chat_template:
        caps.add("thinking")
    return caps


def go_capabilities(template: Template) -> set[str]:
    caps = set()
    if template.references("Tools"):
        caps.add("tools")
    if template.references("Thinking"):
        caps.add("thinking")
    return caps


def _probes() -> list[list[dict[str, str]]]:
    """The conversations rendered: each one bare, then with a system message, then with a system message
    alone (to tell a template that ignores system messages from one that renders them)."""
    bare = [list(c) for c in _CONVERSATIONS]
    return [*bare, *([_SYSTEM, *c] for c in bare)]


def render_jinja(chat_template: str, conversations: list[list[dict[str, str]]], *, bos_token: str,
                 eos_token: str, timeout: float = TIMEOUT) -> list[str | None] | None:
    """Each conversation rendered by ``chat_template`` with a generation prompt (``None`` where the template
    raised), or ``None`` when the template does not compile or the child failed or ran out of time."""
    request = {"template": chat_template, "conversations": conversations, "bos_token": bos_token,
               "eos_token": eos_token}
    try:
        # -P: the child imports corral from where the server did, never from a "corral" in the current directory
        done = subprocess.run([sys.executable, "-P", "-m", "corral.templates.detect"], input=json.dumps(request),
                              capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("chat template detection skipped: %s", exc)
        return None
    if done.returncode != 0:
        log.warning("chat template detection failed: %s", done.stderr.strip().splitlines()[-1:] or done.returncode)
        return None
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        return None
    renders = answer.get("renders") if isinstance(answer, dict) else None
    if not isinstance(renders, list) or len(renders) != len(conversations):
        return None
    return [r if isinstance(r, str) else None for r in renders]


def _default_system(template: Template, conversation: list[dict[str, str]], expected: str) -> str | None:
    """The system prompt that makes ``template`` render ``expected`` for ``conversation`` ("" when none is
    needed), or ``None`` when no system prompt can."""
    from corral.templates.prompt import render_chat

    if render_chat(template, conversation) == expected:
        return ""
    probe = render_chat(template, [{"role": "system", "content": _SENTINEL}, *conversation])
    if probe.count(_SENTINEL) != 1:
        return None
    head, tail = probe.split(_SENTINEL)
    if len(expected) <= len(head) + len(tail) or not expected.startswith(head) or not expected.endswith(tail):
        return None
    system = expected[len(head):len(expected) - len(tail)]
    return system if system.strip() else None


def _matches(template: Template, jinja: list[str | None], conversations: list[list[dict[str, str]]]) -> str | None:
    """The default system prompt if ``template`` reproduces every Jinja render, else ``None``."""
    from corral.templates.prompt import render_chat

    count = len(_CONVERSATIONS)
    bare, with_system = jinja[:count], jinja[count:]
    if any(r is None for r in bare):
        return None
    system = _default_system(template, conversations[0], bare[0] or "")
    if system is None:
        return None
    prefix = [{"role": "system", "content": system}] if system else []
    for conversation, expected in zip(conversations[:count], bare, strict=True):
        if render_chat(template, [*prefix, *conversation]) != expected:
            return None
    for conversation, expected, alone in zip(conversations[count:], with_system, bare, strict=True):
        if expected is None or expected == alone:
            continue  # the Jinja template refuses or ignores system messages: nothing to compare
        if render_chat(template, conversation) != expected:
            return None
    return system


def detect(chat_template: str, *, bos_token: str | None = None, eos_token: str | None = None,
           add_bos: bool = True, timeout: float = TIMEOUT) -> Detected | None:
    """The builtin template equivalent to ``chat_template``, or ``None``.

    ``bos_token``/``eos_token`` are the model's token texts the Jinja template may print; with ``add_bos`` the
    engine adds BOS itself, so a BOS the Jinja template prints is not part of the comparison."""
    from corral.errors import TemplateError
    from corral.templates.gotemplate import parse

    if not chat_template or len(chat_template) > MAX_TEMPLATE_CHARS:
        return None
    conversations = _probes()
    renders = render_jinja(chat_template, conversations, bos_token=bos_token or "", eos_token=eos_token or "",
                           timeout=timeout)
    if renders is None:
        return None
    if add_bos and bos_token:
        renders = [r[len(bos_token):] if r is not None and r.startswith(bos_token) else r for r in renders]
    wanted = jinja_capabilities(chat_template)
    fallback: Detected | None = None
    for name in NAMES:
        text, params = builtin(name)
        try:
            template = parse(text)
        except TemplateError:
            log.error("builtin template %s does not parse", name)
            continue
        caps = go_capabilities(template)
        if not caps >= wanted:
            continue
        try:
            system = _matches(template, renders, conversations)
        except TemplateError:
            continue
        if system is None:
            continue
        found = Detected(name=name, template=text, params=params, system=system)
        if caps == wanted:
            return found
        fallback = fallback or found
    return fallback


# ---------------------------------------------------------------------------------------------------------------
# The child process: renders the Jinja template, nothing else.


def _limit_resources() -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (_MEMORY_LIMIT, _MEMORY_LIMIT))
        resource.setrlimit(resource.RLIMIT_CPU, (_CPU_SECONDS, _CPU_SECONDS))
    except (ImportError, ValueError, OSError):  # not on this platform: the parent's timeout still applies
        pass


def _render_all(request: dict[str, Any]) -> list[str | None]:
    """Hugging Face's ``apply_chat_template`` environment: sandboxed, ``trim_blocks``/``lstrip_blocks``,
    ``loopcontrols``, ``raise_exception``, ``strftime_now`` and a ``tojson`` that keeps non-ASCII text."""
    from datetime import datetime

    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    def tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
               separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    template = env.from_string(request["template"])
    renders: list[str | None] = []
    for conversation in request["conversations"]:
        try:
            renders.append(template.render(messages=conversation, add_generation_prompt=True,
                                           bos_token=request["bos_token"], eos_token=request["eos_token"]))
        except Exception:  # the template refused this conversation (raise_exception) or failed on it
            renders.append(None)
    return renders


def _main() -> int:
    _limit_resources()
    try:
        renders = _render_all(json.loads(sys.stdin.read()))
    except Exception as exc:  # a template that does not compile: report it, the parent treats it as no match
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(json.dumps({"renders": renders}))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
