"""Structured output (``format``) through the real server with the PyPI ollama client."""

from __future__ import annotations

import json

import httpx
import ollama
import pydantic
import pytest

from tests.conftest import MODEL, ServerProcess

pytestmark = pytest.mark.e2e


class Pet(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")  # additionalProperties: false keeps the object finite

    name: str
    kind: str
    age: int


class Household(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    city: str
    pets: list[Pet]
    size: str = pydantic.Field(json_schema_extra={"enum": ["small", "large"]})


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_schema_output_always_validates(server: ServerProcess, stream: bool, seed: int) -> None:
    client = ollama.Client(host=server.url)
    messages = [{"role": "user", "content": "Describe a household with two pets as JSON."}]
    opts = {"temperature": 1.0, "seed": seed, "num_predict": 300}
    schema = Household.model_json_schema()  # uses $defs/$ref for Pet
    if stream:
        text = "".join(c.message.content for c in client.chat(model=MODEL, messages=messages, format=schema,
                                                                 options=opts, stream=True))
    else:
        text = client.chat(model=MODEL, messages=messages, format=schema, options=opts).message.content
    Household.model_validate_json(text)


def test_format_json_parses(server: ServerProcess) -> None:
    r = ollama.Client(host=server.url).generate(
        model=MODEL, prompt="Give me a person as JSON with name and age.", format="json",
        options={"temperature": 0, "num_predict": 200})
    json.loads(r.response)


@pytest.mark.parametrize("bad", [{"type": 5}, {"type": "object", "properties": {"x": {"$ref": "#/$defs/nope"}}},
                                 {"type": "object", "required": "x"}, {"$schema": 1}, {"$schema": ["x"]}])
def test_invalid_schema_is_400(server: ServerProcess, bad: dict) -> None:
    r = httpx.post(server.url + "/api/chat", json={"model": MODEL, "format": bad,
                                                   "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400 and "invalid JSON schema" in r.json()["error"]


@pytest.mark.parametrize("bad", ["yaml", 5, 1.5, True, ["json"]])
def test_unknown_format_is_400(server: ServerProcess, bad: object) -> None:
    """Ollama answers these with a 500; a format that is neither "json" nor a schema is the client's error."""
    r = httpx.post(server.url + "/api/generate", json={"model": MODEL, "prompt": "hi", "format": bad})
    assert r.status_code == 400 and r.json()["error"].startswith("invalid format:")
