"""Differential test: Corral's Go-template interpreter against gotpl 0.1.0, a second, independent pure-Python
implementation of Go's ``text/template`` (a dev dependency).

Both render the same template source with the same data.  Outputs must be equal byte for byte; where one side
fails the other must fail too (only the failure is compared: the two word their messages differently).

* Every Ollama template in ``tests/fixtures/ollama_templates/`` and every builtin template, on the values
  ``prompt.py`` hands the interpreter for a set of chats (captured from ``render_chat``/``render_generate``), and on
  random chats (hypothesis): roles, unicode and markup in contents, tool definitions, tool calls and results.
* Random small templates (hypothesis) on random data: ``if``/``with``/``range``/``else``, ``break``/``continue``,
  variables, ``define``/``template``/``block``, comments, trim markers, and the builtins ``eq ne lt le gt ge and or
  not len index slice print printf println html js urlquery`` plus Ollama's ``json``.
* ``KNOWN_DEVIATIONS``: where gotpl is not Go.  Each entry is pinned by a test asserting both outputs (Corral's
  being Go's, derived from Go's source), so the list goes stale loudly if either side changes; the generators keep
  those cases out of the random tests (nil values only where a nil means the same to both, printf verbs other than
  %v only on numbers, strings and bools, printable runes only), which stay strict about everything else.
* ``FOUND_IN_CORRAL``: what this test found wrong in Corral, where gotpl had Go's answer.

gotpl is set up as Ollama sets up Go: ``missingkey=zero`` (Ollama's ``template.Parse``) and Ollama's ``json``
function, here a reference ``json.Marshal`` written from Go's documentation on top of Python's ``json`` module.  Go
values reach gotpl in its own terms: structs as objects with attributes, maps as dicts, slices as lists; a Go type's
``String`` method (Ollama's ``templateArgs``, ``templateTools``...) is written out here from Ollama's source and
given to gotpl through its ``__go_format_value__`` hook.  gotpl's ``printf`` honours that hook, but printing an
action's value skips it for maps and lists (Go prints both through ``fmt``); the ``gotpl_stringers`` fixture routes
that path through the hook as well.
"""

from __future__ import annotations

import base64
import decimal
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import gotpl
import gotpl.runtime.sync_vm as gotpl_vm
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.templates.gotemplate import NIL_EMPTY, OMITEMPTY, OMITNIL, GoStruct, Template, TemplateError, parse
from corral.templates.prompt import (
    PropertyType,
    TemplateArgs,
    TemplateProperties,
    TemplateTool,
    TemplateToolFunction,
    TemplateToolFunctionParameters,
    TemplateTools,
    ToolPropertiesMap,
    render_chat,
    render_generate,
)

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_FILES = sorted((ROOT / "tests" / "fixtures" / "ollama_templates").glob("*.gotmpl")) + sorted(
    (ROOT / "corral" / "templates" / "builtin").glob("*.gotmpl")
)
SOURCES = {
    ("builtin/" if p.parent.name == "builtin" else "") + p.stem: p.read_text(encoding="utf-8") for p in TEMPLATE_FILES
}


# ---------------------------------------------------------------------------------------------------------------
# Go's encoding/json and Ollama's String methods, written from their specifications (not Corral's code)


_JSON_HTML = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _json_string(s: str) -> str:
    """Go escapes <, >, & (HTML-safe), U+2028/9, and replaces invalid UTF-8 (here: lone surrogates) by U+FFFD."""
    out = json.dumps(s, ensure_ascii=False)
    out = re.sub("[<>&\u2028\u2029]", lambda m: _JSON_HTML[m.group()], out)
    return re.sub("[\ud800-\udfff]", "\\\\ufffd", out)


def _json_float(x: float) -> str:
    """Go's float64 encoding: shortest round-trip digits, positional unless below 1e-6 or from 1e21 on, where it
    is exponent form with at least one exponent digit (``1e-7``, ``1e+21``)."""
    if math.isnan(x) or math.isinf(x):
        raise ValueError("json: unsupported value")
    d = decimal.Decimal(repr(x)).normalize()
    if x == 0 or 1e-6 <= abs(x) < 1e21:
        return format(d, "f")
    sign, digits, exp = d.as_tuple()
    assert isinstance(exp, int)
    mantissa = str(digits[0]) + ("." + "".join(map(str, digits[1:])) if len(digits) > 1 else "")
    e = exp + len(digits) - 1
    return ("-" if sign else "") + mantissa + "e" + ("-" if e < 0 else "+") + str(abs(e)).rjust(2 if e > 0 else 1, "0")


def _go_empty(v: Any) -> bool:
    """Go's ``isEmptyValue`` for ``omitempty``: false, 0, "", nil, and empty slices and maps."""
    if v is None or v is False or (isinstance(v, str) and not v):
        return True
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return v == 0
    return isinstance(v, (list, tuple, Mapping)) and len(v) == 0


def reference_json(v: Any) -> str:
    """``json.Marshal`` of the Go value ``v`` stands for (structs by their field tags, maps with sorted keys)."""
    if v is None or getattr(v, "nil", False):  # a Go nil interface, map or slice
        return "null"
    if v is True or v is False:
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _json_float(v)
    if isinstance(v, str):
        return _json_string(v)
    if isinstance(v, PropertyType):  # api.PropertyType's MarshalJSON: one type as a string, several as an array
        return reference_json(v[0] if len(v) == 1 else list(v))
    if isinstance(v, GoStruct):
        fields = []
        for attr, key, flags in v._json if v._json is not None else [(f, f, 0) for f in v._fields]:
            x = getattr(v, attr)
            if (flags & OMITEMPTY and _go_empty(x)) or (flags & OMITNIL and x is None):
                continue
            value = "null" if flags & NIL_EMPTY and not x else reference_json(x)
            fields.append(_json_string(key) + ":" + value)
        return "{" + ",".join(fields) + "}"
    if isinstance(v, Mapping):
        keys = list(v) if isinstance(v, ToolPropertiesMap) else sorted(v)  # Ollama's ordered map keeps its order
        return "{" + ",".join(_json_string(str(k)) + ":" + reference_json(v[k]) for k in keys) + "}"
    if isinstance(v, (bytes, bytearray)):
        return '"' + base64.b64encode(bytes(v)).decode() + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(reference_json(x) for x in v) + "]"
    raise ValueError(f"json: unsupported type {type(v).__name__}")


def ollama_json(v: Any) -> str:
    """Ollama's ``json`` template function: ``json.Marshal``, an error giving the empty string."""
    try:
        return reference_json(getattr(v, "go_value", v))
    except ValueError:
        return ""


def reference_string(v: Any) -> str | None:
    """What the Go type's ``String`` method returns (Ollama's template package and ``api``), None without one."""
    if isinstance(v, PropertyType):
        return "" if not v else v[0] if len(v) == 1 else "[" + " ".join(v) + "]"
    if isinstance(v, (TemplateArgs, TemplateProperties)):
        return "{}" if v.nil else ollama_json(v)
    if isinstance(v, (TemplateTools, TemplateTool, TemplateToolFunction, TemplateToolFunctionParameters)):
        return ollama_json(v)
    return None


# ---------------------------------------------------------------------------------------------------------------
# Go values as gotpl takes them


class GoValue:
    """A Go struct for gotpl: its fields as attributes, printed by its String method when the type has one."""

    def __init__(self, value: GoStruct) -> None:
        self.__dict__["go_value"] = value
        for f in value._fields:
            self.__dict__[f] = to_gotpl(getattr(value, f))

    def __go_format_value__(self, kind: str, mode: str, *, nested: bool) -> str:
        v = self.go_value
        if kind == "type":
            return str(v._go_type)
        s = reference_string(v)
        if s is not None:
            return s
        return "{" + " ".join(gotpl_vm.format_value(self.__dict__[f]) for f in v._fields) + "}"

    def ToTypeScriptType(self) -> str:
        return str(self.go_value.ToTypeScriptType())


class GoMap(dict[str, Any]):
    """A Go map type with a String method."""

    go_value: Any = None

    def __go_format_value__(self, kind: str, mode: str, *, nested: bool) -> str:
        return "map[string]interface {}" if kind == "type" else str(reference_string(self.go_value))


class GoSlice(list[Any]):
    """A Go slice type with a String method."""

    go_value: Any = None

    def __go_format_value__(self, kind: str, mode: str, *, nested: bool) -> str:
        return "[]interface {}" if kind == "type" else str(reference_string(self.go_value))


def to_gotpl(v: Any) -> Any:
    """The Go value ``v`` stands for, in gotpl's terms."""
    if v is None or isinstance(v, (str, bool, int, float)):
        return v
    if isinstance(v, GoStruct):
        return GoValue(v)
    if isinstance(v, Mapping):
        items = {k: to_gotpl(x) for k, x in v.items()}
        if reference_string(v) is None:
            return items
        m = GoMap(items)
        m.go_value = v
        return m
    if isinstance(v, (list, tuple)):
        seq = [to_gotpl(x) for x in v]
        if reference_string(v) is None:
            return seq
        s = GoSlice(seq)
        s.go_value = v
        return s
    raise TypeError(f"no Go value for {type(v).__name__}")


_GOTPL_FORMAT_VALUE = gotpl_vm.format_value


def _format_value(value: object, format_mode: Any = "go") -> str:
    """gotpl's action printing, honouring its own ``__go_format_value__`` hook as its ``printf`` does."""
    hook = getattr(type(value), "__go_format_value__", None)
    if hook is not None:
        return hook(value, "default", format_mode, nested=False)  # type: ignore[no-any-return]
    return _GOTPL_FORMAT_VALUE(value, format_mode)


@pytest.fixture(scope="module", autouse=True)
def gotpl_stringers() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gotpl_vm, "format_value", _format_value)
        yield


_GOTPL_CACHE: dict[str, gotpl.Template] = {}
_CORRAL_CACHE: dict[str, Template] = {}


def run_gotpl(src: str, data: Any) -> tuple[str, str]:
    """("ok", output) or ("error", message)."""
    try:
        t = _GOTPL_CACHE.get(src)
        if t is None:
            t = gotpl.Template(src, missing_key="zero", functions={"json": ollama_json})
            if len(_GOTPL_CACHE) < 64:
                _GOTPL_CACHE[src] = t
        return "ok", t.render(to_gotpl(data))
    except gotpl.TemplateError as e:
        return "error", str(e)


def run_corral(src: str, data: Any) -> tuple[str, str]:
    try:
        t = _CORRAL_CACHE.get(src)
        if t is None:
            t = parse(src)
            if len(_CORRAL_CACHE) < 64:
                _CORRAL_CACHE[src] = t
        return "ok", t.execute(data)
    except TemplateError as e:
        return "error", str(e)


def assert_same(src: str, data: Any, *, must_render: bool = False) -> None:
    """Both render alike, or both fail (unless ``must_render``)."""
    corral, other = run_corral(src, data), run_gotpl(src, data)
    if corral[0] == other[0] == "error" and not must_render:
        return
    assert corral == other, f"template {src!r}\ndata {data!r}"
    assert corral[0] == "ok" or not must_render, corral[1]


# ---------------------------------------------------------------------------------------------------------------
# Real templates on the values prompt.py builds


def captured_values(render: Callable[[], str]) -> list[Any]:
    """The data of every ``Template.execute`` call a render makes (a legacy template runs once per turn)."""
    seen: list[Any] = []
    execute = Template.execute

    def spy(self: Template, data: Any) -> str:
        seen.append(data)
        return execute(self, data)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Template, "execute", spy)
        render()
    assert seen
    return seen


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": 'Weather <now> & "later" for a city',
        "parameters": {
            "type": "object",
            "required": ["city"],
            "properties": {
                "city": {"type": "string", "description": "City, e.g. Zürich"},
                "unit": {"type": ["string", "null"], "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "description": "1-7"},
                "where": {"type": "object", "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}}},
            },
        },
    },
}
SEARCH = {"type": "function", "function": {"name": "search", "parameters": {"type": "object", "properties": {}}}}
CALL = {"function": {"name": "get_weather", "arguments": {"city": "Zürich", "days": 3, "x": [1.5, None, 1e21]}}}
CHATS: dict[str, dict[str, Any]] = {
    "conversation": {
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Hello, how are you?"},
            {"role": "assistant", "content": "Fine. How can I help?"},
            {"role": "user", "content": "Tell me a joke."},
        ]
    },
    "single_user": {"messages": [{"role": "user", "content": "Why is the sky blue?"}]},
    "system_only": {"messages": [{"role": "system", "content": "Be terse."}]},
    "markup_and_unicode": {
        "messages": [
            {"role": "system", "content": "{{ .System }} <|im_end|> \\n %v %!d"},
            {"role": "user", "content": "Ünïcödé 😀 \u2028 <b>&amp;</b> \"quoted\" 'single' \t tab\n"},
            {"role": "user", "content": "a second user turn, merged by collate"},
            {"role": "assistant", "content": "", "thinking": "hmm <think>"},
            {"role": "user", "content": ""},
        ]
    },
    "tools": {
        "messages": [
            {"role": "system", "content": "Use tools."},
            {"role": "user", "content": "Weather in Zürich?"},
            {"role": "assistant", "content": "", "tool_calls": [CALL, {"function": {"name": "search"}}]},
            {"role": "tool", "content": '{"temp": 18}', "tool_name": "get_weather"},
            {"role": "tool", "content": "no results", "tool_name": "search"},
            {"role": "assistant", "content": "It is 18 °C."},
            {"role": "user", "content": "Thanks"},
        ],
        "tools": [WEATHER, SEARCH],
    },
    "tools_last_call_open": {
        "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": "", "tool_calls": [CALL]},
        ],
        "tools": [WEATHER],
    },
    "empty_tools": {"messages": [{"role": "user", "content": "hi"}], "tools": []},
    "thinking": {
        "messages": [
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4", "thinking": "add them"},
            {"role": "user", "content": "and 3+3?"},
        ],
        "think": True,
    },
    "images": {"messages": [{"role": "user", "content": "what is [img] this?", "images": ["aGk=", "aGk="]}]},
}


def fixture_cases() -> list[tuple[str, str, Any]]:
    cases = []
    for name, src in SOURCES.items():
        tmpl = parse(src)
        for chat, kw in CHATS.items():
            values = captured_values(lambda t=tmpl, kw=kw: render_chat(t, **kw))
            cases += [(name, f"{chat}-{i}", v) for i, v in enumerate(values)]
        values = captured_values(lambda t=tmpl: render_generate(t, prompt="def add(a, b):", system="Code."))
        cases += [(name, f"generate-{i}", v) for i, v in enumerate(values)]
        values = captured_values(lambda t=tmpl: render_generate(t, prompt="def add(", suffix="return a + b"))
        cases += [(name, "fill_in_the_middle", v) for v in values]
    return cases


FIXTURE_CASES = fixture_cases()


@pytest.mark.parametrize(("name", "case", "values"), FIXTURE_CASES, ids=[f"{c[0]}-{c[1]}" for c in FIXTURE_CASES])
def test_real_templates_render_as_gotpl_does(name: str, case: str, values: Any) -> None:
    assert_same(SOURCES[name], values, must_render=True)


def test_the_comparison_sees_a_one_byte_difference() -> None:
    """The harness itself: a difference in one byte of one message fails the comparison."""
    src = SOURCES["qwen2.5"]
    values = captured_values(lambda: render_chat(parse(src), **CHATS["tools"]))[-1]
    assert run_corral(src, values) == run_gotpl(src, values)
    changed = dict(values, System=values["System"] + "!")
    assert run_corral(src, changed) != run_gotpl(src, values)


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
)
TEXT = st.text(
    alphabet=st.characters(codec="utf-8") | st.sampled_from(list("<>&\"'\\{}\n\t%\u2028\u2029\x00\x1f")), max_size=30
)
NAMES = st.text(alphabet="abcxyz_ÜÉ", min_size=1, max_size=8)
PROPERTY = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["string", "integer", "number", "boolean", "array", "object"])
        | st.lists(NAMES, max_size=2)
    },
    optional={"description": TEXT, "enum": st.lists(JSON_SCALARS, max_size=3), "items": JSON_VALUES},
)
TOOL = st.fixed_dictionaries(
    {
        "type": st.just("function"),
        "function": st.fixed_dictionaries(
            {"name": NAMES},
            optional={
                "description": TEXT,
                "parameters": st.fixed_dictionaries(
                    {"type": st.just("object"), "properties": st.dictionaries(NAMES, PROPERTY, max_size=3)},
                    optional={"required": st.lists(NAMES, max_size=2)},
                ),
            },
        ),
    }
)
TOOL_CALL = st.fixed_dictionaries(
    {
        "function": st.fixed_dictionaries(
            {"name": NAMES}, optional={"arguments": st.dictionaries(NAMES, JSON_VALUES, max_size=3)}
        )
    }
)
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "tool"]), "content": TEXT},
    optional={"thinking": TEXT, "tool_calls": st.lists(TOOL_CALL, max_size=2), "tool_name": NAMES},
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    messages=st.lists(MESSAGE, min_size=1, max_size=6),
    tools=st.none() | st.lists(TOOL, max_size=2),
    think=st.none() | st.booleans(),
)
def test_random_chats_render_as_gotpl_does(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, think: bool | None
) -> None:
    for src in SOURCES.values():
        for values in captured_values(lambda src=src: render_chat(parse(src), messages, tools=tools, think=think)):
            assert_same(src, values, must_render=True)


# ---------------------------------------------------------------------------------------------------------------
# Random templates on random data


# Data: one key per kind of value, never nil below the top (gotpl's nil handling is Go's only where the
# deviations below say so); ``.N`` is nil and ``.M`` a map that may lack the keys templates ask for.
KEYS = st.text(alphabet="xyZé", min_size=1, max_size=2)
# Printable characters (Go's unicode.IsPrint) and the ASCII specials: gotpl's js leaves other runes raw.
CHARS = st.characters(codec="utf-8", categories=["L", "M", "N", "P", "S"]) | st.sampled_from(
    list(" <>&\"'\\\n\t%{}-=\u2028\x00\x1f\x7f")
)
SCALARS = (
    st.booleans()
    | st.integers(0, 300)
    | st.floats(-1e22, 1e22, allow_nan=False).map(lambda f: round(f, 3))
    | st.sampled_from([0.0, -0.0, 1e-7, 1e21, 0.1, 1e6, 123456789.0])
    | st.text(alphabet=CHARS, max_size=6)
)
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3), max_leaves=6
)
DATA = st.fixed_dictionaries(
    {
        "S": st.text(alphabet=CHARS, min_size=2, max_size=6),
        "I": st.integers(0, 300),
        "F": st.floats(-1e7, 1e7, allow_nan=False),
        "B": st.booleans(),
        "L": st.lists(SCALARS, min_size=2, max_size=5),
        "M": st.dictionaries(st.sampled_from(["x", "y", "Z"]), SCALARS, max_size=3),
        "V": VALUES,
    }
).map(lambda d: {**d, "N": None})

# Operands by kind, so that most comparisons compare like with like and most indexes are numbers (a template that
# fails at once tests little).  None of these is nil; fields hang off ``$``, the data, since inside ``range`` and
# ``with`` dot may be a list or a number, whose fields are one of the deviations.
INTS = ["$.I", "0", "1", "2", "-2", "0x1F", "1_000", "'x'", "(len $.L)", "(len $.S)"]
FLOATS = ["$.F", "1.5", "-0.25", "1e3", "0.1", "1e21"]
STRINGS = ["$.S", '"a"', '""', '"é<&>\\n"', "`r\\aw`", "(print $.I)", '(printf "%v" $.F)']
BOOLS = ["$.B", "true", "false", "(not $.S)"]
SCALAR = INTS + FLOATS + STRINGS + BOOLS
PRINTF_SCALAR = [x for x in SCALAR if x != "-2"]  # gotpl's %c and %q fail on ints outside Unicode
KINDS = [INTS, FLOATS, STRINGS, BOOLS, INTS, STRINGS, SCALAR]
SOLID = [*SCALAR, "$.L", "$.M", "$.V", "."]
# Values that may be nil; only positions where a nil means the same to gotpl as to Go take them: printed by an
# action, tested by if/with/and/or/not, ranged over, passed to a template, measured, escaped or marshalled.
MAYBE_NIL = ["$.N", "$.M.x", "$.M.y", "$"]  # not index of a missing key: see the deviations
# Verbs for any operand, and ones only for numbers, strings and bools: on slices and maps gotpl's fmt is not Go's
# (see the deviations), and neither is its %#v of a nil inside one.
FORMATS_ANY = ['"%v"', '"%+v"', '"%T"', '"%v|%v"', '"%%"', '"x"']
FORMATS = ['"%d"', '"%s"', '"%q"', '"%x"', '"%X"', '"%5.2f"', '"%e"', '"%E"', '"%g"', '"%G"', '"%-4s|"', '"%05d"']
FORMATS += ['"%t"', '"%c"', '"%U"', '"%#v"', '"%o"', '"%8.3q"', '"%-6d|"', '"%x %X"']
FORMATS += [
    '"%+d"',
    '"% d"',
    '"%.2s"',
    '"%#q"',
    '"%#o"',
    '"%.0f"',
    '"%10.4e"',
    '"%3c"',
    '"%[1]v"',
    '"%*d"',
    '"%z"',
    '"%!"',
]
RANGE_OVER = ["$.L", "$.L", "$.M", "$.V", "$.V", "3", "$.N", "$.M.x", "(slice $.L 1)", "$.I"]


def _pair(fn: str) -> st.SearchStrategy[str]:
    """``fn A B`` with A and B mostly of one kind."""
    return (
        st.sampled_from(KINDS)
        .flatmap(lambda kind: st.tuples(st.sampled_from(kind), st.sampled_from(kind)))
        .map(lambda t: f"{fn} {t[0]} {t[1]}")
    )


def _expressions(o: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Pipelines over operands ``o`` whose value is never nil, so that any function may take them."""
    ints = st.sampled_from(["0", "0", "1", "1", "2", "$.I"])
    return st.one_of(
        o,
        st.tuples(st.sampled_from(["not", "len", "print", "println", "html", "js", "urlquery", "json"]), o).map(
            " ".join
        ),
        st.sampled_from(["eq", "ne", "lt", "le", "gt", "ge"]).flatmap(_pair),
        st.tuples(st.sampled_from(["and", "or", "print", "eq"]), o, o).map(" ".join),
        st.sampled_from(KINDS)
        .flatmap(lambda kind: st.lists(st.sampled_from(kind), min_size=3, max_size=4))
        .map(lambda args: "eq " + " ".join(args)),
        st.tuples(st.sampled_from(["$.L", "$.S"]), ints).map(lambda t: f"index {t[0]} {t[1]}"),
        st.tuples(st.sampled_from(["$.L", "$.S"]), ints, st.none() | ints).map(
            lambda t: f"slice {t[0]} {t[1]}" + (f" {t[2]}" if t[2] else "")
        ),
        st.tuples(st.sampled_from(FORMATS_ANY), st.lists(o, max_size=3)).map(
            lambda t: " ".join(["printf", t[0], *t[1]])
        ),
        st.tuples(st.sampled_from(FORMATS), st.lists(st.sampled_from(PRINTF_SCALAR), max_size=3)).map(
            lambda t: " ".join(["printf", t[0], *t[1]])
        ),
        st.tuples(o, st.sampled_from(["len", "print", 'printf "%v"', "json", "not", "eq 1", "html", "js"])).map(
            " | ".join
        ),
    )


OPERAND_0 = st.sampled_from(SOLID)
EXPR_0 = _expressions(OPERAND_0)
EXPR_1 = _expressions(OPERAND_0 | EXPR_0.map(lambda e: f"({e})"))
NIL_OPERAND = st.sampled_from(SOLID + MAYBE_NIL)
NIL_SAFE_EXPR = EXPR_1 | st.one_of(
    NIL_OPERAND,
    st.tuples(st.sampled_from(["not", "len", "html", "js", "urlquery", "json"]), NIL_OPERAND).map(" ".join),
    st.tuples(st.sampled_from(["and", "or"]), NIL_OPERAND, NIL_OPERAND).map(" ".join),
)
TEXT_PIECES = st.text(alphabet=st.sampled_from(list("ab \n\t.-}")), max_size=4)
ACTION = st.tuples(
    st.sampled_from(["{{", "{{ ", "{{- ", "{{-\n"]), NIL_SAFE_EXPR, st.sampled_from(["}}", " }}", " -}}", "\t-}}"])
).map("".join)
SIMPLE = TEXT_PIECES | ACTION | st.sampled_from(["{{/* c */}}", "{{- /* c */ -}}", "{{ $ | len }}", "{{ $ }}"])


def _blocks(body: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Control structures around ``body`` pieces."""
    branch = st.tuples(
        st.sampled_from(["if", "with"]), NIL_SAFE_EXPR, body, st.none() | body, st.none() | NIL_SAFE_EXPR, body
    ).map(
        lambda t: (
            f"{{{{ {t[0]} {t[1]} }}}}{t[2]}"
            + (f"{{{{ else {t[0]} {t[4]} }}}}{t[5]}" if t[4] is not None else "")
            + (f"{{{{ else }}}}{t[3]}" if t[3] is not None else "")
            + "{{ end }}"
        )
    )
    loops = st.tuples(
        st.sampled_from(["range", "range $e :=", "range $i, $e :="]),
        st.sampled_from(RANGE_OVER),
        body,
        st.none() | body,
    ).map(
        lambda t: f"{{{{ {t[0]} {t[1]} }}}}{{{{ . }}}}{t[2]}" + (f"{{{{ else }}}}{t[3]}" if t[3] else "") + "{{ end }}"
    )
    early = st.tuples(
        st.sampled_from(RANGE_OVER), EXPR_0, st.sampled_from(["break", "continue"]), body, st.sampled_from(["", "-"])
    ).map(
        lambda t: (
            f"{{{{ range $i, $e := {t[0]} }}}}{{{{ if {t[1]} }}}}{{{{{t[4]} {t[2]} {t[4]}}}}}{{{{ end }}}}"
            f"{{{{ $i }}}}={{{{ $e }}}};{t[3]}{{{{ end }}}}"
        )
    )
    variables = st.tuples(EXPR_1, body, EXPR_0).map(
        lambda t: f"{{{{ $v := {t[0]} }}}}{t[1]}{{{{ $v }}}}{{{{ $v = {t[2]} }}}}{{{{ $v }}}}"
    )
    return branch | loops | early | variables


BODY_0 = st.lists(SIMPLE, max_size=3).map("".join)
BLOCK_1 = SIMPLE | _blocks(BODY_0)
BODY_1 = st.lists(BLOCK_1, max_size=3).map("".join)
BLOCK_2 = SIMPLE | _blocks(BODY_1)
# {{define}} only at the top level; a name defined twice is an error unless one of the bodies is empty.
NAMED = st.tuples(st.sampled_from("tuvwxyz"), st.just("") | BODY_1, NIL_SAFE_EXPR, st.sampled_from("bcdefgt")).map(
    lambda t: (
        f'{{{{ define "{t[0]}" }}}}{t[1]}{{{{ end }}}}{{{{ template "{t[0]}" $ }}}}'
        f'{{{{ block "{t[3]}" {t[2]} }}}}[{{{{ . }}}}]{{{{ end }}}}'
    )
)
TEMPLATES = st.lists(BLOCK_2 | NAMED, min_size=1, max_size=4).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(src=TEMPLATES, data=DATA)
def test_random_templates_render_as_gotpl_does(src: str, data: dict[str, Any]) -> None:
    assert_same(src, data)


# ---------------------------------------------------------------------------------------------------------------
# Known deviations: gotpl is not Go here (Corral is)

# (name, why, template, data, Corral's = Go's result, gotpl's result); ("error", text): a failure whose message
# contains text.  Go's results are derived from text/template's and fmt's source (exec.go evalField, funcs.go eq and
# index, print.go doPrintf/printValue, format.go fmtFloat).
Result = tuple[str, str]
KNOWN_DEVIATIONS: list[tuple[str, str, str, dict[str, Any], Result, Result]] = [
    (
        "field of nil",
        "under Ollama's missingkey=zero a nil is a nil interface, and Go fails on its fields; gotpl goes on",
        "{{ .X.Y }}",
        {"X": None},
        ("error", "nil pointer evaluating interface {}.Y"),
        ("ok", "<no value>"),
    ),
    (
        "field of a missing key",
        "the same: under missingkey=zero the missing key's value is a nil interface",
        "{{ .Missing.Y }}",
        {},
        ("error", "nil pointer evaluating interface {}.Y"),
        ("ok", "<no value>"),
    ),
    (
        "field of a slice",
        "Go has no fields on slices, numbers, strings or bools (an error); gotpl treats them as missing keys",
        "{{ .L.x }}",
        {"L": [1, 2]},
        ("error", "can't evaluate field x in type []interface {}"),
        ("ok", "<no value>"),
    ),
    (
        "print of nil",
        "print, printf and println hand Go's fmt a nil interface, which prints <nil>; gotpl prints <no value>",
        '{{ print .N }}|{{ printf "%v" .N }}|{{ println .N }}',
        {"N": None},
        ("ok", "<nil>|<nil>|<nil>\n"),
        ("ok", "<no value>|<no value>|<no value>\n"),
    ),
    (
        "eq with nil",
        "Go's eq finds a nil unequal to a basic value; gotpl calls them incompatible types (an error)",
        '{{ eq .N "a" }} {{ ne .N 1 }}',
        {"N": None},
        ("ok", "false true"),
        ("error", "incompatible types for comparison"),
    ),
    (
        "if nil",
        "a command that is the nil literal is an error in Go (exec.go evalCommand); gotpl takes it as false",
        "{{ if nil }}a{{ else }}b{{ end }}",
        {},
        ("error", "nil is not a command"),
        ("ok", "b"),
    ),
    (
        "index with a nil key",
        "Go's index cannot use nil as a map[string] key (an error); gotpl looks it up and finds nothing",
        "{{ index .M .N }}",
        {"M": {"a": 1}, "N": None},
        ("error", "value is nil; should be of type string"),
        ("ok", "<no value>"),
    ),
    (
        "index with a number key",
        "Go does not convert an index to the map's key type (an error); gotpl looks it up and finds nothing",
        "{{ index .M 1 }}",
        {"M": {"a": 1}},
        ("error", "value has type int; should be string"),
        ("ok", "<no value>"),
    ),
    (
        "index of a missing key",
        "Go gives the map's zero value, a nil that json marshals as null; gotpl gives functions its own marker",
        '{{ json (index .M "x") }}',
        {"M": {}},
        ("ok", "null"),
        ("ok", ""),
    ),
    (
        "verbs on slices",
        "Go's fmt applies a verb (and width) to each element of a slice or map; gotpl calls the verb bad",
        '{{ printf "%x|%d|%5v" .L .L .L }}',
        {"L": [1, "a", None]},
        ("ok", "[1 61 <nil>]|[1 %!d(string=a) <nil>]|[    1     a <nil>]"),
        ("ok", "%!x([]interface {}=[1 a <nil>])|%!d([]interface {}=[1 a <nil>])|[1 a <nil>]"),
    ),
    (
        "%#v of a nil element",
        "Go's %#v writes a nil inside a slice as interface {}(nil); gotpl as <nil>",
        '{{ printf "%#v" .L }}',
        {"L": [1, None]},
        ("ok", "[]interface {}{1, interface {}(nil)}"),
        ("ok", "[]interface {}{1, <nil>}"),
    ),
    (
        "precision of %v",
        "Go's %.3v truncates a string and rounds a float (%.3g); gotpl ignores the precision",
        '{{ printf "%.3v|%.3v" "abcdef" 3.14159 }}',
        {},
        ("ok", "abc|3.14"),
        ("ok", "abcdef|3.14159"),
    ),
    (
        "float flags",
        "Go rounds %x to its precision, keeps the point and zeros under #, and pads zeros after the sign",
        '{{ printf "%.3x|%#.3g|%#.0f|%+08.3f|%08.3f" 1.5 1.0 2.0 1.0 -0.25 }}',
        {},
        ("ok", "0x1.800p+00|1.00|2.|+001.000|-000.250"),
        ("ok", "0x1.8p+00|1|2|00+1.000|00-0.250"),
    ),
    (
        "%b of zero",
        "Go's %b writes 0.0 with the subnormal exponent, 0p-1074; gotpl writes 0p-53",
        '{{ printf "%b" 0.0 }}',
        {},
        ("ok", "0p-1074"),
        ("ok", "0p-53"),
    ),
    (
        "negative * precision",
        "Go's fmt reports a negative precision argument as %!(BADPREC); gotpl ignores it",
        '{{ printf "%.*d" -1 42 }}',
        {},
        ("ok", "%!(BADPREC)42"),
        ("ok", "42"),
    ),
    (
        "%c of a non-rune",
        "Go prints an int outside Unicode as U+FFFD under %c and %q; gotpl fails",
        '{{ printf "%c|%q" -1 -1 }}',
        {},
        ("ok", "\ufffd|'\ufffd'"),
        ("error", "chr() arg not in range"),
    ),
    (
        "js of non-printable runes",
        "Go's JSEscape writes every non-printable rune as \\uXXXX; gotpl only control characters and U+2028/9",
        "{{ js .S }}",
        {"S": "a\u00a0b\u200bc\ue000"},
        ("ok", "a\\u00A0b\\u200Bc\\uE000"),
        ("ok", "a\u00a0b\u200bc\ue000"),
    ),
]


@pytest.mark.parametrize(
    ("name", "reason", "src", "data", "go", "other"), KNOWN_DEVIATIONS, ids=[d[0] for d in KNOWN_DEVIATIONS]
)
def test_known_gotpl_deviation(
    name: str, reason: str, src: str, data: dict[str, Any], go: Result, other: Result
) -> None:
    for want, (kind, out) in ((go, run_corral(src, data)), (other, run_gotpl(src, data))):
        assert kind == want[0], (name, out)
        assert want[1] in out if kind == "error" else out == want[1], (name, out)


# Where this test found Corral wrong and gotpl right (now both give Go's result).
FOUND_IN_CORRAL: list[tuple[str, str, dict[str, Any], str]] = [
    ("hex float", '{{ printf "%x %X" 1.5 -1.5 }}', {}, "0x1.8p+00 -0X1.8P+00"),
    (
        "Go syntax",
        '{{ printf "%#v|%#v" .S .X }}',
        {"S": 'a"b', "X": ["a", 1, {"k": 1.5}]},
        '"a\\"b"|[]interface {}{"a", 1, map[string]interface {}{"k":1.5}}',
    ),
    ("argument indexes", '{{ printf "%[2]v %[1]v" 1 2 }}|{{ printf "%[3]v" 1 }}', {}, "2 1|%!v(BADINDEX)"),
]


@pytest.mark.parametrize(("name", "src", "data", "go"), FOUND_IN_CORRAL, ids=[f[0] for f in FOUND_IN_CORRAL])
def test_found_in_corral(name: str, src: str, data: dict[str, Any], go: str) -> None:
    assert run_corral(src, data) == ("ok", go)
    assert run_gotpl(src, data) == ("ok", go)
