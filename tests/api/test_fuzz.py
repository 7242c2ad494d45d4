"""Property-based fuzzing of the HTTP API against its own OpenAPI schema, plus hostile-input properties.

1. Schemathesis generates requests for every operation in ``/openapi.json`` of a real server. The generative and
   network endpoints are fuzzed only with a model name that does not exist (so the body is validated, then the
   request ends in a 404 before anything loads); ``/api/pull``, ``/api/push`` and ``/api/create`` are left out (a
   valid name there would reach a registry), and are covered by the hostile-name properties below instead.
2. Hypothesis sends malformed JSON, wrong types, huge strings, NUL bytes and path tricks in names and digests: the
   answer is always a 4xx in Ollama's ``{"error": ...}`` shape, and nothing appears outside the server's store.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from conftest import ServerProcess, running_server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import content_type_conformance, response_schema_conformance

from corral.errors import InvalidModelName
from corral.store.names import parse_name

pytestmark = pytest.mark.e2e

MISSING_MODEL = "fuzz-missing-model:latest"
GENERATIVE = re.compile(r"^/api/(generate|chat)$|^/v1/(chat/completions|completions|messages)$")
EXCLUDED = r"^/api/(pull|push|create)$"
LOAD_OPTIONS = ("num_ctx", "num_batch", "num_thread", "num_gpu", "use_mmap", "num_keep")
TIMEOUT = 30.0


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server of this module's own: the fuzzer may delete or copy its models."""
    with running_server(tmp_path_factory.mktemp("fuzz"), {"CORRAL_KEEP_ALIVE": "30s"}) as srv:
        yield srv


def _bound(case: Any) -> None:
    """Keep a case cheap: generative endpoints get a missing model; no case may change how a model loads."""
    body = case.body
    if not isinstance(body, dict):
        return
    if GENERATIVE.match(case.path) and "model" in body:
        body["model"] = MISSING_MODEL
    options = body.get("options")
    if isinstance(options, dict):
        for key in LOAD_OPTIONS:
            options.pop(key, None)
    body.pop("keep_alive", None)


def _assert_not_internal(response: Any, where: str) -> None:
    """No 5xx at all: these requests reach neither an engine (the model does not exist) nor a registry, so every
    failure is the client's (Ollama answers option type errors with a 500; Corral with a 400)."""
    status = response.status_code
    assert status < 500, f"{where}: {status} {response.text[:300]}"


def _fuzz_operation(operation: Any, mode: GenerationMode) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
              database=None)
    def run(case: Any) -> None:
        _bound(case)
        response = case.call(timeout=TIMEOUT)
        where = f"{mode.value} {case.method} {case.path} body={str(case.body)[:200]!r}"
        _assert_not_internal(response, where)
        if mode is GenerationMode.NEGATIVE:
            return
        # 4xx bodies are Ollama's (400, not FastAPI's documented 422), so only 2xx bodies are held to the schema.
        if 200 <= response.status_code < 300 and response.content:
            case.validate_response(response, checks=[response_schema_conformance, content_type_conformance])

    run()


def test_schema_fuzz(fuzz_server: ServerProcess) -> None:
    """Every operation of /openapi.json, valid and invalid bodies: no unhandled 5xx, 2xx bodies match the schema."""
    schema = schemathesis.openapi.from_url(fuzz_server.url + "/openapi.json").exclude(path_regex=EXCLUDED)
    failures: list[str] = []
    tested = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz_operation(operation, mode)
            except Unsatisfiable:
                continue  # nothing to make invalid: no body, or a path parameter that takes any string
            except Exception as exc:
                failures.append(f"{operation.label} [{mode.value}]: {str(exc)[:600]}")
        tested += 1
    assert tested >= 15
    assert not failures, "\n\n".join(failures)


def test_server_alive_after_fuzzing(fuzz_server: ServerProcess) -> None:
    with fuzz_server.client() as c:
        assert c.get("/").status_code == 200
        assert c.get("/api/version").status_code == 200
    assert fuzz_server.proc.poll() is None
    log = fuzz_server.log_text()
    assert "Traceback" not in log and "unhandled error" not in log, log[-3000:]


def test_empty_answers_are_documented_empty(fuzz_server: ServerProcess) -> None:
    """/api/delete and /api/copy answer an empty 200 (as Ollama does); the schema must not promise JSON."""
    paths = httpx.get(fuzz_server.url + "/openapi.json", timeout=10).json()["paths"]
    assert "content" not in paths["/api/delete"]["delete"]["responses"]["200"]
    assert "content" not in paths["/api/copy"]["post"]["responses"]["200"]


# --- hostile numbers in every numeric field of every route ------------------------------------------------------------

# Raw JSON literals: NaN and the infinities are not JSON (Go's decoder refuses them), 1e400 is beyond a double,
# the rest are valid JSON that no field should take into the engine unchecked.
HOSTILE_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e400", "1e308", "-1e308", "9223372036854775808",
                   "-9223372036854775809", "2147483648", "-1", "0.5", '"12"', "true", "[1]", "{}"]
ONE_TOKEN = {"num_predict": 1}
# A smallest valid body per route with a JSON body: load-only or one-token requests against the bundled models, so
# a hostile value that is accepted costs little. Every such route in /openapi.json must be listed (the test says
# which is missing), so a new route cannot skip this check.
BASE_BODIES: dict[str, dict[str, Any]] = {
    "/api/show": {"model": "smollm2:135m"},
    "/api/delete": {"model": "fuzz-missing-model"},
    "/api/copy": {"source": "fuzz-missing-model", "destination": "fuzz-copy"},
    "/api/generate": {"model": "smollm2:135m", "prompt": "", "options": dict(ONE_TOKEN)},
    "/api/chat": {"model": "smollm2:135m", "messages": [], "options": dict(ONE_TOKEN)},
    "/api/embed": {"model": "all-minilm", "input": "hi"},
    "/api/embeddings": {"model": "all-minilm", "prompt": "hi"},
    "/api/tokenize": {"model": "smollm2:135m", "content": "hi"},
    "/api/detokenize": {"model": "smollm2:135m", "tokens": [1]},
    "/v1/chat/completions": {"model": "smollm2:135m", "messages": [{"role": "user", "content": "hi"}],
                             "max_tokens": 1},
    "/v1/completions": {"model": "smollm2:135m", "prompt": "hi", "max_tokens": 1},
    "/v1/embeddings": {"model": "all-minilm", "input": "hi"},
    "/v1/responses": {"model": "smollm2:135m", "input": "hi", "max_output_tokens": 1},
    "/v1/messages": {"model": "smollm2:135m", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]},
    "/v1/messages/count_tokens": {"model": "smollm2:135m", "messages": [{"role": "user", "content": "hi"}]},
    "/api/rerank": {"model": "all-minilm", "query": "q", "documents": ["d"]},
    "/v1/rerank": {"model": "all-minilm", "query": "q", "documents": ["d"]},
}
NOT_FUZZED = {"/api/create", "/api/pull", "/api/push"}  # registry and conversion work: tests/authoring, registry/


def _numeric_fields(schema: dict[str, Any], spec: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of the integer and number properties of a request schema (one level into objects)."""
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    out: list[str] = []
    for name, prop in (schema.get("properties") or {}).items():
        kinds = {prop.get("type")} | {alt.get("type") for alt in prop.get("anyOf", []) if isinstance(alt, dict)}
        if kinds & {"integer", "number"}:
            out.append(prefix + name)
        elif "$ref" in prop and not prefix:
            out += _numeric_fields(prop, spec, prefix=name + ".")
    return out


def _with(body: dict[str, Any], path: str, literal: str) -> str:
    """``body`` as JSON text with the field at ``path`` set to a raw literal (which may not be JSON at all)."""
    marker = "__HOSTILE__"
    copy = json.loads(json.dumps(body))
    target = copy
    *parents, leaf = path.split(".")
    for part in parents:
        target = target.setdefault(part, {})
    target[leaf] = marker
    return json.dumps(copy).replace(f'"{marker}"', literal)


def test_hostile_numbers_in_every_numeric_field(tmp_path: Path) -> None:
    """NaN, infinities, huge, negative and wrong-typed values in every numeric field the schema documents, and in
    every option Ollama defines: each is refused with a 4xx naming the field, or accepted and served; never a 5xx.
    A server of its own, stopped before the hostile-input tests below watch the temporary tree."""
    from corral.inference.options import FLOAT_OPTIONS, INT_OPTIONS

    with running_server(tmp_path) as srv:
        _hostile_numbers(srv, FLOAT_OPTIONS | INT_OPTIONS)


def _hostile_numbers(fuzz_server: ServerProcess, options: set[str]) -> None:
    spec = httpx.get(fuzz_server.url + "/openapi.json", timeout=10).json()
    routes = {path: op["requestBody"]["content"]["application/json"]["schema"]
              for path, ops in spec["paths"].items() for op in ops.values()
              if isinstance(op, dict) and "requestBody" in op and "application/json" in op["requestBody"]["content"]}
    missing = set(routes) - set(BASE_BODIES) - NOT_FUZZED
    assert not missing, f"routes with a JSON body but no base body here: {sorted(missing)}"
    failures: list[str] = []
    sent = 0
    with httpx.Client(base_url=fuzz_server.url, timeout=120) as client:
        for path, base in BASE_BODIES.items():
            fields = _numeric_fields(routes[path], spec)
            if "options" in base:
                fields += [f"options.{key}" for key in sorted(options)]
            for field in fields:
                for literal in HOSTILE_NUMBERS:
                    body = _with(base, field, literal)
                    method = "DELETE" if path == "/api/delete" else "POST"
                    r = client.request(method, path, content=body, headers={"Content-Type": "application/json"})
                    sent += 1
                    if r.status_code >= 500:
                        failures.append(f"{path} {field}={literal}: {r.status_code} {r.text[:200]}")
    assert sent > 300
    assert not failures, "\n".join(failures[:40])
    log = fuzz_server.log_text()
    assert "Traceback" not in log and "unhandled error" not in log, log[-3000:]


# --- hostile inputs ------------------------------------------------------------------------------------------------


def _tree(root: Path) -> set[str]:
    out = set()
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            out.add(os.path.relpath(os.path.join(directory, name), root))
    return out


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, httpx.Client, Path]]:
    """A server whose whole temp dir (store, home, cwd) is watched: nothing but its log may appear there."""
    root = tmp_path_factory.mktemp("hostile")
    with running_server(root, {"CORRAL_NOPRUNE": "1"}) as srv, \
            httpx.Client(base_url=srv.url, timeout=TIMEOUT) as client:
        before = _tree(root.parent)
        yield srv, client, root
        after = _tree(root.parent)
        created = {p for p in after - before if not p.startswith(f"{root.name}/server-")}
        assert not created, f"files created by hostile requests: {sorted(created)[:20]}"
        assert "Traceback" not in srv.log_text()


def _is_client_error(response: httpx.Response, where: str) -> None:
    assert 400 <= response.status_code < 500, f"{where}: {response.status_code} {response.text[:300]}"
    if response.request.method == "HEAD" or (response.status_code == 404 and not response.content.startswith(b"{")):
        return  # HEAD has no body; an unrouted path is Go's plain "404 page not found"
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str | dict), f"{where}: {response.text[:300]}"


def _invalid_name(name: str) -> bool:
    """Only names the store refuses: a valid one could make /api/pull or /api/push reach a registry."""
    try:
        parse_name(name)
    except InvalidModelName:
        return True
    return False


TRICKS = [
    "../../../../etc/passwd", "/etc/passwd", "..", "%2e%2e/%2e%2e/x", "..%2f..%2fx", "a/../../b", "a\x00b",
    "smollm2\x00:135m", "\u202e135m:2llomms", "ｓｍｏｌｌｍ２:135m", "a" * 5000, "C:\\Windows\\x", "a:b:c", "@sha256:x",
    "registry.ollama.ai/../../x", "x:" + "/" * 20, "\n", " ", "\ud7ff\ufeff", "nul\x00/../x",
]
hostile_names = st.one_of(
    st.sampled_from(TRICKS),
    st.text(alphabet=st.sampled_from(list("./\\%:@\x00\n a2e")), min_size=1, max_size=30).filter(_invalid_name),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)

NAME_ENDPOINTS = [
    ("POST", "/api/show", "model"), ("DELETE", "/api/delete", "model"), ("POST", "/api/copy", "source"),
    ("POST", "/api/copy", "destination"), ("POST", "/api/generate", "model"), ("POST", "/api/chat", "model"),
    ("POST", "/api/embed", "model"), ("POST", "/api/pull", "model"), ("POST", "/api/push", "model"),
    ("POST", "/api/create", "model"), ("POST", "/api/tokenize", "model"), ("POST", "/v1/chat/completions", "model"),
]
BODY_ENDPOINTS = sorted({(m, p) for m, p, _ in NAME_ENDPOINTS} | {("POST", "/api/embeddings"),
                                                                  ("POST", "/v1/messages")})
HOSTILE_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck),
                            derandomize=True)


@HOSTILE_SETTINGS
@given(endpoint=st.sampled_from(NAME_ENDPOINTS), name=hostile_names)
def test_hostile_model_names(hostile: tuple[ServerProcess, httpx.Client, Path], endpoint: tuple[str, str, str],
                             name: str) -> None:
    _srv, client, _root = hostile
    method, path, field = endpoint
    body: dict[str, Any] = {"model": "smollm2:135m", "source": "smollm2:135m", "destination": "x-copy",
                            "stream": False, "messages": [], "prompt": "", "input": "x", "content": "x",
                            "options": {"num_predict": 1}}
    body[field] = name
    if path == "/api/copy":
        body.pop("model")
    response = client.request(method, path, json=body)
    _is_client_error(response, f"{method} {path} {field}={name!r}")


@HOSTILE_SETTINGS
@given(endpoint=st.sampled_from(BODY_ENDPOINTS), raw=st.one_of(
    st.binary(max_size=64),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b"", b"{", b"[]", b"null", b"\"x\"", b"{\"model\": 5}", b"{\"model\": [\"a\"]}",
                     b"{\"model\": \"smollm2:135m\", \"options\": \"x\", \"stream\": false}",
                     b"{\"model\": \"smollm2:135m\", \"messages\": \"x\"}", b"\xff\xfe\x00{",
                     b"{\"model\": \"" + b"a" * 100_000 + b"\"}"]),
))
def test_malformed_bodies(hostile: tuple[ServerProcess, httpx.Client, Path], endpoint: tuple[str, str],
                          raw: bytes) -> None:
    _srv, client, _root = hostile
    method, path = endpoint
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        value = None
    if isinstance(value, dict) and isinstance(value.get("model"), str) and value["model"] and path not in (
            "/api/pull", "/api/push", "/api/create", "/api/delete", "/api/copy"):
        # a well-formed request with a real model name is not hostile; keep only the invalid shapes
        value["model"] = "\x00bad"
        raw = json.dumps(value).encode()
    if path in ("/api/pull", "/api/push", "/api/create") and isinstance(value, dict):
        value["model"] = value["name"] = "../bad"  # never let a generated body name a pullable model
        raw = json.dumps(value).encode()
    if path == "/api/delete" and isinstance(value, dict):
        value["model"] = "missing/../x"
        raw = json.dumps(value).encode()
    response = client.request(method, path, content=raw, headers={"Content-Type": "application/json"})
    _is_client_error(response, f"{method} {path} {raw[:80]!r}")


@pytest.mark.parametrize(("method", "path"), BODY_ENDPOINTS)
def test_non_utf8_body_is_400(hostile: tuple[ServerProcess, httpx.Client, Path], method: str, path: str) -> None:
    """Bytes that are not UTF-8 made FastAPI raise an HTTPException the OpenAI and Anthropic routes answered as 500."""
    _srv, client, _root = hostile
    response = client.request(method, path, content=b"\xc3m\xff\xfe", headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert "internal error" not in response.text


DIGEST_TRICKS = [
    "sha256:" + "0" * 63, "sha256:" + "g" * 64, "sha256:" + "0" * 65, "sha256-../../etc/passwd", "..", "%2e%2e",
    "sha256:" + "0" * 64 + "\n", "sha512:" + "0" * 128, "SHA256:" + "0" * 64, "sha256:..%2f..%2f" + "0" * 58,
    "sha256%3a" + "0" * 64 + "/../x", "sha256:" + "0" * 32 + "\x00" + "0" * 31, "/etc/passwd", "sha256:",
]


@HOSTILE_SETTINGS
@given(digest=st.one_of(st.sampled_from(DIGEST_TRICKS), st.text(min_size=1, max_size=80)),
       method=st.sampled_from(["HEAD", "POST"]))
def test_invalid_blob_digests(hostile: tuple[ServerProcess, httpx.Client, Path], digest: str, method: str) -> None:
    _srv, client, _root = hostile
    if re.fullmatch(r"sha256[:-][0-9a-fA-F]{64}", digest):
        return
    from urllib.parse import quote

    url = "/api/blobs/" + quote(digest, safe="")
    response = client.request(method, url, content=b"payload")
    _is_client_error(response, f"{method} {url}")


def test_blob_digest_mismatch_keeps_nothing(hostile: tuple[ServerProcess, httpx.Client, Path]) -> None:
    srv, client, _root = hostile
    before = set(os.listdir(srv.models / "blobs"))
    response = client.post("/api/blobs/sha256:" + "ab" * 32, content=b"not what the digest says")
    assert response.status_code == 400 and "digest mismatch" in response.json()["error"]
    assert set(os.listdir(srv.models / "blobs")) == before
