"""Structured output: the request's ``format`` checked and turned into the engine's JSON-schema constraint.

The engine compiles the schema into a grammar and samples under it, so the output always parses and matches. It
silently ignores a schema it cannot read, so Corral checks the schema first and answers 400 with the reason.
"""

from __future__ import annotations

from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError

from corral.errors import RequestError

ANY_JSON: dict[str, Any] = {}


def engine_schema(fmt: Any) -> dict[str, Any] | None:
    """None for no constraint; ``{}`` for any JSON (``"json"``); else the validated schema."""
    if fmt is None or fmt == "" or fmt == "null":
        return None
    if fmt == "json":
        return ANY_JSON
    if not isinstance(fmt, dict):  # Ollama answers this with a 500; it is the client's error (docs/hardening.md)
        shown = repr(fmt) if len(repr(fmt)) <= 80 else repr(fmt)[:77] + "..."
        raise RequestError(f'invalid format: {shown}; expected "json" or a valid JSON Schema object')
    if not isinstance(fmt.get("$schema", ""), str):
        raise RequestError("invalid JSON schema in format: $schema must be a string")
    try:
        jsonschema.validators.validator_for(fmt).check_schema(fmt)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        raise RequestError(f"invalid JSON schema in format{' at ' + where if where else ''}: {exc.message}") from None
    _check_refs(fmt, fmt)
    return fmt


def _check_refs(node: Any, root: dict[str, Any], depth: int = 0) -> None:
    """Every local ``$ref`` must point at something, or the engine would drop the constraint."""
    if depth > 64:
        raise RequestError("invalid JSON schema in format: nested too deeply")
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            if not ref.startswith("#"):
                raise RequestError(f"invalid JSON schema in format: only local $ref is supported, got {ref!r}")
            target: Any = root
            for part in [p for p in ref[1:].split("/") if p]:
                part = part.replace("~1", "/").replace("~0", "~")
                if not isinstance(target, dict) or part not in target:
                    raise RequestError(f"invalid JSON schema in format: unresolvable $ref {ref!r}")
                target = target[part]
        for value in node.values():
            _check_refs(value, root, depth + 1)
    elif isinstance(node, list):
        for value in node:
            _check_refs(value, root, depth + 1)
