"""The JSON-schema grammar (``corral.inference.grammar``): what llama.cpp's converter, and so Ollama, allows.

Each grammar is checked by a small GBNF recognizer (tests/inference/gbnf.py) against texts it must accept and
texts it must refuse; the engine's own reading of the same grammars is tested through the server in
test_structured.py.
"""

from __future__ import annotations

import json
import random

import jsonschema
import pytest

from corral.errors import RequestError
from corral.inference.grammar import llguidance_schema, schema_to_grammar
from tests.inference.gbnf import accepts

PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"]}


def ok(schema: object, *texts: str) -> None:
    grammar = schema_to_grammar(schema)
    for text in texts:
        assert accepts(grammar, text), f"refused {text!r}\n{grammar}"


def refused(schema: object, *texts: str) -> None:
    grammar = schema_to_grammar(schema)
    for text in texts:
        assert not accepts(grammar, text), f"accepted {text!r}\n{grammar}"


def test_the_issue_schema_allows_exactly_its_two_keys() -> None:
    ok(PERSON, '{"name": "Ann", "age": 30}', '{"name":"Ann","age":-7}', '{\n  "name": "Ann",\n  "age": 30\n}\n',
       '{"name": "A\\"nn\\u00e9", "age": 0}')
    refused(PERSON, '{"name": "Ann", "age": 30, "gender": "f"}', '{"name": "Ann"}', '{"age": 30, "name": "Ann"}',
            '{"name": "Ann", "age": 3.5}', '{"name": "Ann", "age": 12345678901234567}', '{"name": "Ann", "age": 01}',
            ' {"name": "Ann", "age": 30}', '{"name": "Ann", "age": 30}x')


def test_whitespace_is_bounded_per_place_as_in_llama_cpp() -> None:
    ok(PERSON, '{"name": "a",\n\n' + " " * 20 + '"age": 1}', '{"name": "a",\n\t"age": 1} ')
    refused(PERSON, '{"name": "a",\n' + " " * 21 + '"age": 1}', '{"name": "a",\n\n\n"age": 1}',
            '{"name": "a",  "age": 1}')


def test_optional_properties_follow_the_required_ones_in_declared_order() -> None:
    schema = {"type": "object", "required": ["b"],
              "properties": {"a": {"type": "string"}, "b": {"type": "integer"}, "c": {"type": "boolean"}}}
    ok(schema, '{"b": 1}', '{"b": 1, "a": "x"}', '{"b": 1, "c": true}', '{"b": 1, "a": "x", "c": false}')
    refused(schema, '{"a": "x", "b": 1}', '{"b": 1, "c": true, "a": "x"}', '{}', '{"b": 1, "d": 2}',
            '{"b": 1, "a": "x", "a": "y"}')
    none_required = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}
    ok(none_required, "{}", '{"a": 1}', '{"b": 2}', '{"a": 1, "b": 2}')
    refused(none_required, '{"b": 2, "a": 1}', '{"c": 1}')


def test_additional_properties_only_where_the_schema_says() -> None:
    anything = {**PERSON, "additionalProperties": True}
    ok(anything, '{"name": "a", "age": 1, "city": "x", "n": [1, {"k": null}]}', '{"name": "a", "age": 1}')
    refused(anything, '{"name": "a", "age": 1, "age": 2}', '{"name": "a", "age": 1, "name": "b"}',
            '{"name": "a", "city": "x", "age": 1}')
    typed = {**PERSON, "additionalProperties": {"type": "integer"}}
    ok(typed, '{"name": "a", "age": 1, "x": 2, "y": 3}', '{"name": "a", "age": 1, "ag": 2, "ages": 4, "": 5}')
    refused(typed, '{"name": "a", "age": 1, "x": "2"}')
    map_only = {"type": "object", "additionalProperties": {"type": "string"}}
    ok(map_only, "{}", '{"k": "v", "k2": "w"}')
    refused(map_only, '{"k": 1}')
    ok({"type": "object"}, "{}", '{"any": [1, 2, {"x": true}]}')
    refused({"type": "object"}, "[]", '"text"')


def test_enums_consts_type_lists_and_alternatives() -> None:
    schema = {"type": "object", "required": ["size", "v", "kind", "n"],
              "properties": {"size": {"enum": ["small", "large", 3, None]}, "v": {"const": {"a": [1, "b"]}},
                             "kind": {"type": ["string", "null"]},
                             "n": {"anyOf": [{"type": "integer"}, {"type": "boolean"}]}}}
    ok(schema, '{"size": "small", "v": {"a":[1,"b"]}, "kind": null, "n": 3}',
       '{"size": null, "v": {"a":[1,"b"]}, "kind": "x", "n": true}')
    refused(schema, '{"size": "medium", "v": {"a":[1,"b"]}, "kind": null, "n": 3}',
            '{"size": 3, "v": {"a":[1]}, "kind": null, "n": 3}', '{"size": 3, "v": {"a":[1,"b"]}, "kind": 1, "n": 3}',
            '{"size": 3, "v": {"a":[1,"b"]}, "kind": null, "n": "3"}')


def test_arrays_with_min_and_max_items_and_tuples() -> None:
    schema = {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 3}
    ok(schema, "[1, 2]", "[1,2,3]")
    refused(schema, "[]", "[1]", "[1, 2, 3, 4]", '[1, "2"]')
    ok({"type": "array", "items": {"type": "string"}}, "[]", '["a", "b"]')
    ok({"type": "array", "items": {"type": "string"}, "minItems": 1}, '["a"]')
    refused({"type": "array", "items": {"type": "string"}, "minItems": 1}, "[]")
    tuple_schema = {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}]}
    ok(tuple_schema, '["a", 1]')
    refused(tuple_schema, '["a"]', '[1, "a"]', '["a", 1, 2]')


def test_nested_defs_and_recursion() -> None:
    schema = {"type": "object", "required": ["pets"],
              "properties": {"pets": {"type": "array", "items": {"$ref": "#/$defs/Pet"}}},
              "$defs": {"Pet": {"type": "object", "required": ["name", "kids"],
                                "properties": {"name": {"type": "string"},
                                               "kids": {"type": "array", "items": {"$ref": "#/$defs/Pet"}}}}}}
    ok(schema, '{"pets": []}', '{"pets": [{"name": "a", "kids": [{"name": "b", "kids": []}]}]}')
    refused(schema, '{"pets": [{"name": "a"}]}', '{"pets": [{"name": "a", "kids": [], "age": 1}]}')
    old_style = {"definitions": {"N": {"type": "integer"}}, "type": "array", "items": {"$ref": "#/definitions/N"}}
    ok(old_style, "[1, 2]")
    refused(old_style, '["1"]')


def test_all_of_merges_properties() -> None:
    schema = {"allOf": [{"$ref": "#/$defs/A"}, {"type": "object", "properties": {"b": {"type": "integer"}}},
                        {"anyOf": [{"type": "object", "properties": {"c": {"type": "string"}}}]}],
              "$defs": {"A": {"type": "object", "properties": {"a": {"type": "string"}}}}}
    ok(schema, '{"a": "x", "b": 1}', '{"a": "x", "b": 1, "c": "y"}')
    refused(schema, '{"a": "x"}', '{"a": "x", "b": 1, "d": 2}')


@pytest.mark.parametrize(("low", "high"), [(0, 0), (3, 250), (-12, 7), (-300, -5), (None, 42), (17, None),
                                           (None, -3), (-1, None), (0, 9), (10, 99), (95, 1005)])
def test_integer_ranges(low: int | None, high: int | None) -> None:
    schema: dict[str, object] = {"type": "integer"}
    if low is not None:
        schema["minimum"] = low
    if high is not None:
        schema["maximum"] = high
    grammar = schema_to_grammar(schema)
    lo, hi = (low if low is not None else -400), (high if high is not None else 400)
    for n in range(lo - 30, hi + 31):
        inside = (low is None or n >= low) and (high is None or n <= high)
        assert accepts(grammar, str(n)) == inside, (n, low, high)
    assert not accepts(grammar, "007")


def test_exclusive_bounds() -> None:
    grammar = schema_to_grammar({"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10})
    assert [n for n in range(-5, 15) if accepts(grammar, str(n))] == list(range(1, 10))
    grammar = schema_to_grammar({"type": "integer", "minimum": 1.5, "maximum": 4.2})
    assert [n for n in range(-5, 15) if accepts(grammar, str(n))] == [2, 3, 4]


def test_string_lengths_formats_and_patterns() -> None:
    ok({"type": "string", "minLength": 2, "maxLength": 3}, '"ab"', '"abc"', '"a\\nb"')
    refused({"type": "string", "minLength": 2, "maxLength": 3}, '"a"', '"abcd"')
    ok({"type": "string", "format": "uuid"}, '"123e4567-e89b-12d3-a456-426614174000"')
    refused({"type": "string", "format": "uuid"}, '"123e4567"')
    ok({"type": "string", "format": "date"}, '"2024-02-29"')
    refused({"type": "string", "format": "date"}, '"2024-13-01"', '"yesterday"')
    ok({"type": "string", "format": "date-time"}, '"2024-02-29T13:05:00Z"', '"2024-02-29T13:05:00.123+02:00"')
    ok({"type": "string", "format": "email"}, '"not checked, as in llama.cpp"')
    pattern = {"type": "string", "pattern": "^[A-Z]{3}-\\d{2,4}(x|yz)?$"}
    ok(pattern, '"ABC-12"', '"ABC-1234yz"', '"XYZ-99x"')
    refused(pattern, '"AB-12"', '"ABC-1"', '"ABC-12345"', '"abc-12"', '"ABC-12y"')


def test_json_format_is_any_object() -> None:
    ok({}, "{}", '{"a": [1, 2.5e3, "x", null, true, {"b": {}}]}')
    refused({}, "[1]", '"x"', "3", "null")


def test_unknown_keywords_are_ignored_and_bad_schemas_are_400() -> None:
    ok({"type": "object", "properties": {"a": {"type": "number", "minimum": 5, "multipleOf": 2}},
        "required": ["a"], "minProperties": 1, "not": {"type": "null"}}, '{"a": 1.5}')
    with pytest.raises(RequestError, match="pattern must start"):
        schema_to_grammar({"type": "string", "pattern": "abc"})
    with pytest.raises(RequestError, match="unresolvable"):
        schema_to_grammar({"$ref": "#/$defs/missing"})
    with pytest.raises(RequestError, match="only local"):
        schema_to_grammar({"$ref": "https://example.com/schema.json"})
    with pytest.raises(RequestError, match="lookaround"):
        schema_to_grammar({"type": "string", "pattern": "^(?=a)b$"})


def test_property_names_that_need_escaping() -> None:
    schema = {"type": "object", "required": ['we"ird', "new\nline", "ü"],
              "properties": {'we"ird': {"type": "integer"}, "new\nline": {"type": "integer"}, "ü": {"const": 1}}}
    ok(schema, json.dumps({'we"ird': 1, "new\nline": 2, "ü": 1}, ensure_ascii=False))
    refused(schema, json.dumps({'we"ird': 1, "new\nline": 2, "ü": 2}, ensure_ascii=False))


def test_random_objects_validate_iff_the_grammar_accepts_them() -> None:
    """Random instances of a mixed schema (some valid, some broken): the grammar and a JSON-schema validator agree
    on every one, where the grammar's stricter order and key rules are not in play."""
    schema = {"type": "object", "required": ["id", "tags"],
              "properties": {"id": {"type": "integer", "minimum": 1, "maximum": 999},
                             "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 2},
                             "note": {"type": "string", "maxLength": 5}}}
    grammar = schema_to_grammar(schema)
    rng = random.Random(7)
    for _ in range(200):
        doc: dict[str, object] = {"id": rng.choice([0, 1, 5, 999, 1000, "7"]),
                                  "tags": rng.sample(["a", "b", "c", "d"], rng.randint(0, 3))}
        if rng.random() < 0.5:
            doc["note"] = "x" * rng.randint(0, 7)
        valid = jsonschema.Draft202012Validator(schema).is_valid(doc)
        assert accepts(grammar, json.dumps(doc)) == valid, doc


def test_llguidance_schema_means_the_same() -> None:
    schema = {"type": "object", "required": ["b"],
              "properties": {"a": {"type": "object", "properties": {"x": {"type": "integer"}}},
                             "b": {"type": "array", "items": {"type": "object", "properties": {"y": {}}}}},
              "$defs": {"D": {"properties": {"z": {}}, "additionalProperties": True}}}
    out = llguidance_schema(schema)
    assert list(out["properties"]) == ["b", "a"]
    assert out["additionalProperties"] is False
    assert out["properties"]["a"]["additionalProperties"] is False
    assert out["properties"]["b"]["items"]["additionalProperties"] is False
    assert out["$defs"]["D"]["additionalProperties"] is True
    assert out["x-guidance"] == {"lenient": True}
    assert "additionalProperties" not in schema  # the request's own schema is left alone
