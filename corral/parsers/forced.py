"""Forced tool calls: ``tool_choice`` ``required`` (OpenAI), ``any`` (Anthropic) or a named function.

Ollama ignores ``tool_choice``; Corral enforces it by constraining generation. The prompt is rendered as usual and
followed by the text the model's template puts before a call's JSON (``<tool_call>\\n`` for Qwen/Hermes templates,
see :func:`corral.parsers.tools.tool_call_prefix`); the engine then samples under a JSON schema that accepts exactly
``{"name": <an allowed tool>, "arguments": <that tool's parameters>}``, so the output is one valid call by
construction and generation ends when the object closes. :class:`ForcedCallReader` reads that output as it
streams: the call's name as soon as it is complete, then its arguments in fragments, then the whole call.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError

from corral.errors import RequestError

__all__ = ["ForcedCallReader", "call_schema", "tool_name"]

_ANY_OBJECT: dict[str, Any] = {"type": "object"}


def tool_name(tool: Any) -> str | None:
    """A tool definition's function name (native ``{"function": {...}}`` or flat ``{"name"}``)."""
    if not isinstance(tool, Mapping):
        return None
    fn = tool.get("function")
    name = fn.get("name") if isinstance(fn, Mapping) else tool.get("name")
    return name if isinstance(name, str) and name else None


def _parameters(tool: Mapping[str, Any]) -> Any:
    fn = tool.get("function")
    params = fn.get("parameters") if isinstance(fn, Mapping) else tool.get("parameters")
    return _ANY_OBJECT if params is None or params == {} else params


def _relocate(node: Any, base: str, root: Any, name: str, depth: int = 0) -> Any:
    """A copy of ``node`` whose local ``$ref`` pointers (relative to the tool's parameters schema, ``root``) point
    at the same place once the schema sits at ``base`` inside the combined one; an unresolvable one is a 400."""
    if depth > 64:
        raise RequestError(f"invalid JSON schema in the parameters of tool {name!r}: nested too deeply")
    if isinstance(node, list):
        return [_relocate(v, base, root, name, depth + 1) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str):
            if not value.startswith("#"):
                raise RequestError(f"invalid JSON schema in the parameters of tool {name!r}: only local $ref is "
                                   f"supported, got {value!r}")
            target: Any = root
            for part in [p for p in value[1:].split("/") if p]:
                part = part.replace("~1", "/").replace("~0", "~")
                if not isinstance(target, dict) or part not in target:
                    raise RequestError(f"invalid JSON schema in the parameters of tool {name!r}: unresolvable "
                                       f"$ref {value!r}")
                target = target[part]
            out[key] = base + value[1:]
        else:
            out[key] = _relocate(value, base, root, name, depth + 1)
    return out


_SCHEMA_KEYS = ("items", "additionalItems", "contains", "not", "if", "then", "else", "propertyNames",
                "unevaluatedItems", "unevaluatedProperties", "additionalProperties")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


def _closed(schema: Any, depth: int = 0) -> None:
    """Objects that list their ``properties`` get ``additionalProperties: false`` unless they say otherwise (in
    place), as OpenAI's strict mode requires: the engine's grammar otherwise lets a model add keys it invents, and a
    small model does so until the token limit."""
    if not isinstance(schema, dict) or depth > 64:
        return
    if isinstance(schema.get("properties"), dict) and "additionalProperties" not in schema:
        schema["additionalProperties"] = False
    for key in _SCHEMA_KEYS:
        _closed(schema.get(key), depth + 1)
    for key in _SCHEMA_LISTS:
        value = schema.get(key)
        for sub in value if isinstance(value, list) else ():
            _closed(sub, depth + 1)
    for key in _SCHEMA_MAPS:
        value = schema.get(key)
        for sub in value.values() if isinstance(value, dict) else ():
            _closed(sub, depth + 1)


def call_schema(tools: list[dict[str, Any]], names: list[str] | None = None) -> dict[str, Any]:
    """The JSON schema of one call to one of ``tools`` (only those in ``names`` when given), for the engine's
    grammar sampler. Each tool's parameters schema is checked first (400 with the reason), as the engine silently
    drops a constraint it cannot read."""
    chosen: list[tuple[str, Any]] = []
    for tool in tools:
        name = tool_name(tool)
        if name is None or (names is not None and name not in names) or any(n == name for n, _ in chosen):
            continue
        params = _parameters(tool)
        if not isinstance(params, dict):
            raise RequestError(f"invalid JSON schema in the parameters of tool {name!r}: not an object")
        try:
            jsonschema.validators.validator_for(params).check_schema(params)
        except SchemaError as exc:
            where = "/".join(str(p) for p in exc.path)
            raise RequestError(f"invalid JSON schema in the parameters of tool {name!r}"
                               f"{' at ' + where if where else ''}: {exc.message}") from None
        except (TypeError, ValueError, AttributeError, RecursionError) as exc:  # e.g. "$schema": 1
            raise RequestError(f"invalid JSON schema in the parameters of tool {name!r}: {exc}") from None
        chosen.append((name, params))
    if not chosen:
        raise RequestError("tool_choice names no tool that was provided")
    several = len(chosen) > 1
    options = []
    for i, (name, params) in enumerate(chosen):
        base = f"#/anyOf/{i}/properties/arguments" if several else "#/properties/arguments"
        arguments = _relocate(params, base, params, name)
        _closed(arguments)
        options.append({"type": "object", "properties": {"name": {"const": name}, "arguments": arguments},
                        "required": ["name", "arguments"], "additionalProperties": False})
    return {"anyOf": options} if several else options[0]


_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"arguments"\s*:\s*')


class ForcedCallReader:
    """Reads the single ``{"name": ..., "arguments": ...}`` object that forced decoding produces, as it streams.

    :meth:`add` returns ``(name, fragment)``: the call's name once, as soon as it is complete (the schema puts it
    before the arguments), and each piece of the arguments' JSON text as it arrives. :meth:`finish` returns the
    whole call (arguments decoded), or ``None`` if the output was cut short (the token limit) and is no call."""

    __slots__ = ("_args_at", "_buf", "_depth", "_emitted", "_esc", "_in_str", "_name", "_names", "_scan", "_state")

    def __init__(self, names: list[str]) -> None:
        self._names = names
        self._buf = ""
        self._state = 0  # 0: before the arguments; 1: in the arguments; 2: after them
        self._name: str | None = None
        self._args_at = 0  # where the arguments start in the buffer
        self._scan = 0  # how far the JSON tracker has read
        self._emitted = 0  # how far argument text has been returned
        self._depth = 0
        self._in_str = False
        self._esc = False

    @property
    def text(self) -> str:
        """Everything generated so far."""
        return self._buf

    def add(self, text: str) -> tuple[str | None, str]:
        self._buf += text
        name: str | None = None
        if self._state == 0:
            m = _HEAD.match(self._buf)
            if m is None or m.end() >= len(self._buf):
                return None, ""
            try:
                decoded = json.loads(m.group(1))
            except ValueError:
                decoded = None
            if not isinstance(decoded, str) or decoded not in self._names:
                self._state = 2  # not the expected shape: the whole object is decoded at the end instead
                return None, ""
            self._name = name = decoded
            self._state = 1
            self._args_at = self._scan = self._emitted = m.end()
        if self._state != 1:
            return name, ""
        end = self._track()
        if end >= 0:
            self._state = 2
            fragment = self._buf[self._emitted:end].rstrip()
            self._emitted = end
            return name, fragment
        # Hold back trailing whitespace: it may be the space before the closing brace, not part of the arguments.
        stop = len(self._buf.rstrip())
        fragment = self._buf[self._emitted:stop] if stop > self._emitted else ""
        self._emitted = max(self._emitted, stop)
        return name, fragment

    def _track(self) -> int:
        """Advance over new text; the index where the arguments value ends (the outer object's closing brace or a
        comma at its level), or -1 if it has not ended yet."""
        s = self._buf
        i = self._scan
        while i < len(s):
            c = s[i]
            if self._in_str:
                if self._esc:
                    self._esc = False
                elif c == "\\":
                    self._esc = True
                elif c == '"':
                    self._in_str = False
            elif c == '"':
                self._in_str = True
            elif c in "{[":
                self._depth += 1
            elif c in "}]" or (c == "," and self._depth == 0):
                if self._depth == 0:
                    self._scan = i
                    return i
                self._depth -= 1
            i += 1
        self._scan = i
        return -1

    def finish(self) -> dict[str, Any] | None:
        """The call, Ollama-shaped: ``{"function": {"index": 0, "name", "arguments"}}``."""
        try:
            data, _ = json.JSONDecoder().raw_decode(self._buf.lstrip())
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        name, arguments = data.get("name"), data.get("arguments")
        if not isinstance(name, str) or name not in self._names:
            return None
        if not isinstance(arguments, dict):
            arguments = {}
        return {"function": {"index": 0, "name": name, "arguments": arguments}}

    @property
    def name(self) -> str | None:
        """The call's name once it was read in full (while streaming)."""
        return self._name
