"""JSON schema to a GBNF grammar, with the semantics of llama.cpp's own converter (the one Ollama samples under).

Why Corral builds the grammar itself: the wheel's engine is compiled with llguidance, so a ``json_schema`` sent to
it goes through llguidance, which follows the JSON Schema spec where Ollama's converter does not. Under llguidance an
object allows keys beyond its ``properties`` unless the schema says ``additionalProperties: false``, and whitespace
between tokens is unbounded; at a high temperature a small model then adds keys and spaces until it runs out of
tokens. llama.cpp's GBNF converter (``json_schema_to_grammar`` in ``common/``, which Ollama calls) is reachable from
the wheel only through llguidance (the binding never asks for GBNF, and the C++ function is not exported), so this
module implements the same rules and the engine gets a ``grammar``:

- an object with ``properties`` allows no other keys unless ``additionalProperties`` says so (``true`` or a
  schema); required properties come first, in the order of ``properties``, then any of the optional ones in that
  order, then additional keys;
- whitespace after a token is nothing, one space, or one or two newlines and up to 20 spaces or tabs;
- numbers have at most 16 integer and 16 fraction digits; ``minimum``/``maximum`` (and the exclusive forms) bound
  integers, not other numbers;
- strings honour ``minLength``/``maxLength``, ``pattern`` (anchored with ``^...$``) and the formats ``date``,
  ``time``, ``date-time`` and ``uuid``; other formats are plain strings;
- arrays honour ``items``, ``prefixItems`` (or a list ``items``), ``minItems`` and ``maxItems``;
- ``enum``, ``const``, ``anyOf``/``oneOf`` (both as alternatives), ``allOf`` (properties merged), ``type`` lists,
  local ``$ref`` to ``$defs``/``definitions`` (recursion allowed);
- keywords the converter does not know are ignored, as llama.cpp ignores them.

:func:`llguidance_schema` is the other half: where the engine must take a schema (a native-path chat with tools,
which refuses a grammar), it gets the schema rewritten so llguidance reaches the same answers (no extra keys,
required first, unknown keywords ignored).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from corral.errors import RequestError

SPACE = 'space ::= | " " | "\\n"{1,2} [ \\t]{0,20}'

# The building blocks, each a rule added to a grammar only when used.
PRIMITIVES: dict[str, tuple[str, tuple[str, ...]]] = {
    "boolean": ('("true" | "false") space', ()),
    "null": ('"null" space', ()),
    "integral-part": ("[0] | [1-9] [0-9]{0,15}", ()),
    "decimal-part": ("[0-9]{1,16}", ()),
    "integer": ('("-"? integral-part) space', ("integral-part",)),
    "number": ('("-"? integral-part) ("." decimal-part)? ([eE] [-+]? integral-part)? space',
               ("integral-part", "decimal-part")),
    "char": ('[^"\\\\\\x7F\\x00-\\x1F] | [\\\\] (["\\\\bfnrt] | "u" [0-9a-fA-F]{4})', ()),
    "string": ('"\\"" char* "\\"" space', ("char",)),
    "value": ("object | array | string | number | boolean | null",
              ("object", "array", "string", "number", "boolean", "null")),
    "object": ('"{" space ( string ":" space value ("," space string ":" space value)* )? "}" space',
               ("string", "value")),
    "array": ('"[" space ( value ("," space value)* )? "]" space', ("value",)),
    "uuid": ('"\\"" [0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" '
             '[0-9a-fA-F]{12} "\\"" space', ()),
    "date": ('[0-9]{4} "-" ( "0" [1-9] | "1" [0-2] ) "-" ( "0" [1-9] | [1-2] [0-9] | "3" [0-1] )', ()),
    "time": ('([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{3} )? '
             '( "Z" | ( "+" | "-" ) ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )', ()),
    "date-time": ('date "T" time', ("date", "time")),
    "date-string": ('"\\"" date "\\"" space', ("date",)),
    "time-string": ('"\\"" time "\\"" space', ("time",)),
    "date-time-string": ('"\\"" date-time "\\"" space', ("date-time",)),
}
FORMATS = {"date": "date-string", "time": "time-string", "date-time": "date-time-string", "uuid": "uuid"}
TYPES = {"boolean", "null", "integer", "number", "string", "object", "array"}

# Ollama's grammar for ``format: "json"``: any JSON object (whitespace as in the schema grammars).
JSON_OBJECT = "object"


def schema_to_grammar(schema: Any) -> str:
    """A GBNF grammar whose ``root`` matches the JSON the schema allows (``{}``: any JSON object, Ollama's
    ``"json"``). Raises RequestError for what the converter cannot build (an unresolvable ``$ref``, an unanchored
    or unsupported ``pattern``)."""
    builder = _Builder(schema if isinstance(schema, dict) else {})
    builder.rules["root"] = builder.primitive(JSON_OBJECT) if schema == {} else builder.visit(schema, "")
    return builder.text()


@dataclass
class _Builder:
    root_schema: dict[str, Any]
    rules: dict[str, str] = field(default_factory=dict)
    refs_in_progress: set[str] = field(default_factory=set)

    def text(self) -> str:
        lines = [SPACE] + [f"{name} ::= {body}" for name, body in sorted(self.rules.items()) if name != "space"]
        return "\n".join(lines) + "\n"

    # -- rules ---------------------------------------------------------------------------------------------------

    def add(self, name: str, body: str) -> str:
        """Add a rule under ``name`` (or ``name-N`` when the name is taken by another body); returns its name."""
        base = re.sub(r"[^a-zA-Z0-9-]+", "-", name).strip("-") or "rule"
        key, n = base, 0
        if key in PRIMITIVES or key in ("root", "space"):
            key = f"{base}-{n}"
        while (key in self.rules and self.rules[key] != body) or key in PRIMITIVES:
            n += 1
            key = f"{base}-{n}"
        self.rules[key] = body
        return key

    def primitive(self, name: str) -> str:
        body, deps = PRIMITIVES[name]
        if name not in self.rules:
            self.rules[name] = body
            for dep in deps:
                self.primitive(dep)
        return name

    # -- schemas -------------------------------------------------------------------------------------------------

    def visit(self, schema: Any, name: str) -> str:
        """The rule name (or a short expression) matching ``schema``."""
        if schema is True or schema == {} or not isinstance(schema, dict):
            return self.primitive("value") if schema is not False else self.add(name or "never", '"\\x00" "\\x01"')
        rule = name or "root-value"
        if "$ref" in schema:
            return self._ref(schema["$ref"])
        if "oneOf" in schema or "anyOf" in schema:
            alts = schema.get("oneOf", schema.get("anyOf")) or []
            return self.add(rule, " | ".join(self.visit(s, f"{name}-{i}") for i, s in enumerate(alts)) or '""')
        if "const" in schema:
            return self.add(rule, literal_value(schema["const"]) + " space")
        if "enum" in schema:
            return self.add(rule, "(" + " | ".join(literal_value(v) for v in schema["enum"]) + ") space")
        kind = schema.get("type")
        if isinstance(kind, list):
            alts = [self.visit({**schema, "type": t}, f"{name}-{t}") for t in kind]
            return self.add(rule, " | ".join(alts))
        if "allOf" in schema:
            return self.add(rule, self._all_of(schema, name))
        if kind in (None, "object") and (
                "properties" in schema
                or ("additionalProperties" in schema and schema["additionalProperties"] is not True)):
            required = set(schema.get("required") or [])
            props = list((schema.get("properties") or {}).items())
            return self.add(rule, self._object(props, required, name, schema.get("additionalProperties")))
        if kind in (None, "array") and ("items" in schema or "prefixItems" in schema):
            return self.add(rule, self._array(schema, name))
        if kind in (None, "string") and "pattern" in schema:
            return self.add(rule, self._pattern(schema["pattern"], name))
        if kind in (None, "string") and schema.get("format") in FORMATS:
            return self.primitive(FORMATS[schema["format"]])
        if kind == "string" and ("minLength" in schema or "maxLength" in schema):
            char = self.primitive("char")
            low = _int(schema.get("minLength"), 0) or 0
            high = _int(schema.get("maxLength"), None)
            return self.add(rule, f'"\\"" {_repeat(char, low, high)} "\\"" space')
        if kind == "integer" and any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum",
                                                          "exclusiveMaximum")):
            return self.add(rule, f"({_int_range(*_int_bounds(schema))}) space")
        if kind == "object" or (kind is None and not schema.keys() - {"description", "title", "$schema", "$defs",
                                                                      "definitions", "$id", "examples", "default"}):
            return self.primitive("object" if kind == "object" else "value")
        if kind in TYPES:
            return self.primitive(kind)
        if kind is None:
            return self.primitive("value")
        raise RequestError(f"invalid JSON schema in format: unrecognized type {kind!r}")

    def _ref(self, ref: Any) -> str:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise RequestError(f"invalid JSON schema in format: only local $ref is supported, got {ref!r}")
        name = "ref" + re.sub(r"[^a-zA-Z0-9-]+", "-", ref[1:])
        if name in self.rules or name in self.refs_in_progress:
            return name
        target: Any = self.root_schema
        for part in [p for p in ref[1:].split("/") if p]:
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, dict) or part not in target:
                raise RequestError(f"invalid JSON schema in format: unresolvable $ref {ref!r}")
            target = target[part]
        self.refs_in_progress.add(name)
        self.rules[name] = ""  # reserved, so a recursive reference finds the name
        body = self.visit(target, name + "-body")
        self.rules[name] = body
        self.refs_in_progress.discard(name)
        return name

    def _resolve(self, schema: Any) -> Any:
        """A ``$ref`` schema's target (for allOf's property merging); other schemas as they are."""
        ref = schema.get("$ref") if isinstance(schema, dict) else None
        if not isinstance(ref, str) or not ref.startswith("#"):
            return schema
        target: Any = self.root_schema
        for part in [p for p in ref[1:].split("/") if p]:
            target = target.get(part.replace("~1", "/").replace("~0", "~"), {}) if isinstance(target, dict) else {}
        return target

    def _all_of(self, schema: dict[str, Any], name: str) -> str:
        """llama.cpp's allOf: the components' properties merged into one object; properties of an ``anyOf``
        inside it are optional, the others required."""
        props: list[tuple[str, Any]] = []
        required: set[str] = set()

        def take(component: Any, is_required: bool) -> None:
            component = self._resolve(component)
            if isinstance(component, dict):
                for key, value in (component.get("properties") or {}).items():
                    props.append((key, value))
                    if is_required:
                        required.add(key)

        for part in schema.get("allOf") or []:
            if isinstance(part, dict) and "anyOf" in part:
                for option in part["anyOf"] or []:
                    take(option, False)
            else:
                take(part, True)
        return self._object(props, required, name, None)

    def _object(self, props: list[tuple[str, Any]], required: set[str], name: str, additional: Any) -> str:
        """Required keys in order, then any of the optional ones in order, then additional keys when allowed."""
        kv: dict[str, str] = {}
        for key, value in props:
            value_rule = self.visit(value, f"{name}-{key}")
            kv[key] = self.add(f"{name}-{key}-kv", f"{literal_value(key)} space \":\" space {value_rule}")
        names = [k for k, _ in props]
        tails = [kv[k] for k in names if k not in required]
        extra = None
        if additional is not None and additional is not False:
            value_rule = self.visit(additional, f"{name}-additional-value") if isinstance(additional, dict) \
                else self.primitive("value")
            key_rule = self.add(f"{name}-additional-k", self._key_except(names)) if names else self.primitive("string")
            extra = self.add(f"{name}-additional-kv", f'{key_rule} ":" space {value_rule}')
            tails.append(extra)
        required_kv = [kv[k] for k in names if k in required]
        body = '"{" space ' + ' "," space '.join(required_kv)
        if tails:
            starts = self._selections(tails, extra, name)
            body += f' ( "," space ( {starts} ) )?' if required_kv else f" ( {starts} )?"
        return body + ' "}" space'

    def _selections(self, tails: list[str], extra: str | None, name: str) -> str:
        """Any non-empty in-order selection from ``tails`` (additional keys, last, may repeat): alternatives, one
        per first element, each followed by a rule for what may come after it (built from the end, so the grammar
        grows with the square of the optional keys, not exponentially)."""
        rest: list[str | None] = [None] * (len(tails) + 1)
        starts: list[str] = [""] * len(tails)
        for i in range(len(tails) - 1, -1, -1):
            start = tails[i] + (f' ( "," space {extra} )*' if tails[i] == extra else "")
            starts[i] = start + (f" {rest[i + 1]}" if rest[i + 1] else "")
            if i > 0:
                rest[i] = self.add(f"{name}-rest-{i}", '( "," space ( ' + " | ".join(starts[i:]) + " ) )?")
        return " | ".join(starts)

    def _key_except(self, names: list[str]) -> str:
        """A JSON string key that is none of ``names`` (they have rules of their own)."""
        trie: dict[str, Any] = {}
        for key in names:
            node = trie
            for ch in key:
                node = node.setdefault(ch, {})
            node[""] = {}
        char = self.primitive("char")
        return f'"\\"" {_continuations(trie, char)} "\\"" space'

    def _array(self, schema: dict[str, Any], name: str) -> str:
        items = schema.get("prefixItems", schema.get("items"))
        if isinstance(items, list):  # a tuple: exactly these items, in order
            parts = [self.visit(s, f"{name}-tuple-{i}") for i, s in enumerate(items)]
            return '"[" space ' + ' "," space '.join(parts) + ' "]" space'
        item = self.visit(items if items is not None else {}, f"{name}-item")
        low = _int(schema.get("minItems"), 0) or 0
        high = _int(schema.get("maxItems"), None)
        if high is not None and high <= 0:
            return '"[" space "]" space'
        rest = _repeat(f'"," space {item}', max(low - 1, 0), None if high is None else high - 1)
        seq = f"{item} {rest}".strip() if rest else item
        return f'"[" space {seq} "]" space' if low > 0 else f'"[" space ( {seq} )? "]" space'

    def _pattern(self, pattern: Any, name: str) -> str:
        if not isinstance(pattern, str) or not (pattern.startswith("^") and pattern.endswith("$")):
            raise RequestError("invalid JSON schema in format: a pattern must start with '^' and end with '$'")
        body = _Regex(pattern[1:-1]).parse()
        return f'"\\"" {body} "\\"" space'


def _continuations(node: dict[str, Any], char: str) -> str:
    """What may follow a prefix (a trie node) so the whole key is not one of the trie's words."""
    children = {c: n for c, n in node.items() if c}
    alts = [f"{literal(c)} ({_continuations(child, char)})" for c, child in sorted(children.items())]
    excluded = "".join(_class_char(c) for c in sorted(children))
    other = f'([^"\\\\\\x7F\\x00-\\x1F{excluded}] | [\\\\] (["\\\\bfnrt] | "u" [0-9a-fA-F]{{4}})) {char}*'
    alts.append(other)
    body = "( " + " | ".join(alts) + " )"
    return body + "?" if "" not in node else body


# -- literals and repetition --------------------------------------------------------------------------------------


def literal(text: str) -> str:
    """A GBNF string literal."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def literal_value(value: Any) -> str:
    """A JSON value, as compact JSON text, as a GBNF literal."""
    return literal(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def _class_char(ch: str) -> str:
    if ch in "]\\^-[":
        return "\\" + ch
    if ord(ch) < 0x20 or ord(ch) == 0x7F:
        return f"\\x{ord(ch):02X}"
    return ch


def _int(value: Any, default: int | None) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _repeat(item: str, low: int, high: int | None) -> str:
    """``item`` repeated low..high times (high None: unbounded), in GBNF's brace syntax."""
    if high is not None and high < low:
        high = low
    if high is None:
        return f"({item})*" if low == 0 else (f"({item})+" if low == 1 else f"({item}){{{low},}}")
    if low == high:
        return "" if low == 0 else (f"({item})" if low == 1 else f"({item}){{{low}}}")
    if (low, high) == (0, 1):
        return f"({item})?"
    return f"({item}){{{low},{high}}}"


# -- integer ranges ----------------------------------------------------------------------------------------------


def _int_bounds(schema: dict[str, Any]) -> tuple[int | None, int | None]:
    """Inclusive integer bounds from minimum/maximum and their exclusive forms (booleans, draft 4, too)."""
    low: int | None = None
    high: int | None = None
    if isinstance(schema.get("minimum"), int | float) and not isinstance(schema.get("minimum"), bool):
        low = math.ceil(schema["minimum"])
    if isinstance(schema.get("maximum"), int | float) and not isinstance(schema.get("maximum"), bool):
        high = math.floor(schema["maximum"])
    ex_min, ex_max = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if ex_min is True and low is not None:
        low += 1
    elif isinstance(ex_min, int | float) and not isinstance(ex_min, bool):
        value = math.floor(ex_min) + 1
        low = value if low is None else max(low, value)
    if ex_max is True and high is not None:
        high -= 1
    elif isinstance(ex_max, int | float) and not isinstance(ex_max, bool):
        value = math.ceil(ex_max) - 1
        high = value if high is None else min(high, value)
    return low, high


MAX_DIGITS = 16


def _int_range(low: int | None, high: int | None) -> str:
    """Decimal integers (no leading zeros) from ``low`` to ``high``; None is unbounded (up to 16 digits)."""
    if low is not None and high is not None and low > high:
        raise RequestError("invalid JSON schema in format: minimum is greater than maximum")
    alts = []
    if low is None or low < 0:  # the negative part: "-" then a magnitude
        mag_low = 1 if high is None or high >= 0 else -high
        mag_high = None if low is None else -low
        if mag_high is None or mag_high >= mag_low:
            alts.append('"-" (' + _nonneg_range(mag_low, mag_high) + ")")
    if high is None or high >= 0:
        alts.append(_nonneg_range(max(low or 0, 0), high))
    return " | ".join(f"({a})" for a in alts)


def _nonneg_range(low: int, high: int | None) -> str:
    """Non-negative integers from ``low`` to ``high`` (None: any with up to 16 digits)."""
    alts = []
    top_digits = MAX_DIGITS if high is None else len(str(high))
    for digits in range(len(str(low)), top_digits + 1):
        lo = max(low, 10 ** (digits - 1) if digits > 1 else 0)
        hi = 10 ** digits - 1 if high is None else min(high, 10 ** digits - 1)
        if lo > hi:
            continue
        alts += _same_length(str(lo), str(hi))
    return " | ".join(alts)


def _same_length(lo: str, hi: str) -> list[str]:
    """Sequences matching every number from ``lo`` to ``hi``, both of the same number of digits."""
    if not lo:
        return [""]
    rest = len(lo) - 1
    tail_any = f" [0-9]{{{rest}}}" if rest > 1 else (" [0-9]" if rest == 1 else "")
    if lo[0] == hi[0]:
        return [f'"{lo[0]}"' + (" (" + " | ".join(_same_length(lo[1:], hi[1:])) + ")" if rest else "")]
    if lo[1:] == "0" * rest and hi[1:] == "9" * rest:
        return [f"[{lo[0]}-{hi[0]}]" + tail_any]
    out = []
    first_full = lo[1:] == "0" * rest
    last_full = hi[1:] == "9" * rest
    start = int(lo[0]) + (0 if first_full else 1)
    end = int(hi[0]) - (0 if last_full else 1)
    if not first_full:
        out.append(f'"{lo[0]}" (' + " | ".join(_same_length(lo[1:], "9" * rest)) + ")")
    if start <= end:
        out.append((f'"{start}"' if start == end else f"[{start}-{end}]") + tail_any)
    if not last_full:
        out.append(f'"{hi[0]}" (' + " | ".join(_same_length("0" * rest, hi[1:])) + ")")
    return out


# -- patterns -----------------------------------------------------------------------------------------------------


class _Regex:
    """The regular-expression subset llama.cpp's converter translates: literals, escapes, ``.``, classes,
    groups, alternation and the quantifiers ``* + ? {n} {n,} {n,m}``."""

    DOT = '[^"\\\\\\x7F\\x00-\\x1F]'
    SHORTHAND: ClassVar[dict[str, str]] = {"d": "[0-9]", "w": "[0-9A-Za-z_]", "s": "[ \\t\\n\\r]"}

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def parse(self) -> str:
        out = self._alternation()
        if self.pos != len(self.text):
            raise self._error(f"unexpected {self.text[self.pos]!r}")
        return out

    def _error(self, what: str) -> RequestError:
        return RequestError(f"invalid JSON schema in format: unsupported pattern {self.text!r}: {what}")

    def _alternation(self) -> str:
        branches = [self._sequence()]
        while self.pos < len(self.text) and self.text[self.pos] == "|":
            self.pos += 1
            branches.append(self._sequence())
        return branches[0] if len(branches) == 1 else "(" + " | ".join(b or '""' for b in branches) + ")"

    def _sequence(self) -> str:
        parts: list[str] = []
        while self.pos < len(self.text) and self.text[self.pos] not in "|)":
            atom = self._atom()
            parts.append(self._quantified(atom))
        return " ".join(parts)

    def _atom(self) -> str:
        ch = self.text[self.pos]
        if ch == "(":
            self.pos += 1
            if self.text.startswith("?:", self.pos):
                self.pos += 2
            elif self.text.startswith("?", self.pos):
                raise self._error("lookarounds and named groups are not supported")
            inner = self._alternation()
            if self.pos >= len(self.text) or self.text[self.pos] != ")":
                raise self._error("unbalanced parenthesis")
            self.pos += 1
            return f"({inner or chr(34) * 2})"
        if ch == "[":
            end = self.pos + 1
            if end < len(self.text) and self.text[end] == "^":
                end += 1
            if end < len(self.text) and self.text[end] == "]":
                end += 1
            while end < len(self.text) and self.text[end] != "]":
                end += 2 if self.text[end] == "\\" else 1
            if end >= len(self.text):
                raise self._error("unterminated character class")
            cls = self.text[self.pos:end + 1]
            self.pos = end + 1
            for short, expansion in self.SHORTHAND.items():
                cls = cls.replace("\\" + short, expansion[1:-1])
            return cls
        if ch == ".":
            self.pos += 1
            return self.DOT
        if ch == "\\":
            if self.pos + 1 >= len(self.text):
                raise self._error("trailing backslash")
            esc = self.text[self.pos + 1]
            self.pos += 2
            if esc in self.SHORTHAND:
                return self.SHORTHAND[esc]
            if esc in "DWSbB":
                raise self._error(f"\\{esc} is not supported")
            return literal({"n": "\n", "t": "\t", "r": "\r"}.get(esc, esc))
        if ch in "*+?{":
            raise self._error(f"nothing to repeat at {ch!r}")
        if ch in "^$":
            raise self._error("anchors inside a pattern are not supported")
        self.pos += 1
        return literal(ch)

    def _quantified(self, atom: str) -> str:
        if self.pos >= len(self.text):
            return atom
        ch = self.text[self.pos]
        if ch in "*+?":
            self.pos += 1
            if self.pos < len(self.text) and self.text[self.pos] in "?+":
                self.pos += 1  # lazy and possessive forms match the same strings
            return f"({atom}){ch}"
        if ch == "{":
            m = re.match(r"\{(\d+)(,(\d*))?\}", self.text[self.pos:])
            if m is None:
                return atom
            self.pos += m.end()
            low = int(m.group(1))
            high = low if m.group(2) is None else (int(m.group(3)) if m.group(3) else None)
            return _repeat(atom, low, high) or '""'
        return atom


# -- the schema llguidance gets where a grammar cannot go ----------------------------------------------------------


def llguidance_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema rewritten so llguidance's reading of it matches llama.cpp's converter: objects with
    ``properties`` get ``additionalProperties: false`` unless they say otherwise, required properties move to the
    front, and unknown keywords are ignored (``x-guidance.lenient``)."""
    out = _llg(schema)
    if isinstance(out, dict):
        guidance = dict(out.get("x-guidance") or {})
        guidance.setdefault("lenient", True)
        out["x-guidance"] = guidance
    return out  # type: ignore[no-any-return]


SUBSCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas")
SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
SUBSCHEMAS = ("items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames")


def _llg(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in SUBSCHEMA_MAPS and isinstance(value, dict):
            out[key] = {k: _llg(v) for k, v in value.items()}
        elif key in SUBSCHEMA_LISTS and isinstance(value, list):
            out[key] = [_llg(v) for v in value]
        elif key in SUBSCHEMAS or (key == "items" and isinstance(value, list)):
            out[key] = [_llg(v) for v in value] if isinstance(value, list) else _llg(value)
        else:
            out[key] = value
    props = out.get("properties")
    if isinstance(props, dict) and out.get("type") in (None, "object"):
        out.setdefault("additionalProperties", False)
        required = [k for k in props if k in set(out.get("required") or [])]
        out["properties"] = {**{k: props[k] for k in required}, **{k: v for k, v in props.items() if k not in required}}
    return out
