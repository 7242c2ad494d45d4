"""Model-name parsing: Ollama's own test cases (types/model/name_test.go), hostile names, and properties."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.errors import InvalidModelName
from corral.store.names import (
    DEFAULT_HOST,
    DEFAULT_NAMESPACE,
    DEFAULT_TAG,
    ModelName,
    parse_name,
    split_scheme,
)
from corral.store.store import Store

PART80 = "8" * 80
PART350 = "3" * 350


# --- Ollama's TestParseNameParts -------------------------------------------------------------------------------

PARSE_CASES = [
    (
        "registry.ollama.ai/library/dolphin-mistral:7b-v2.6-dpo-laser-q6_K",
        ("registry.ollama.ai", "library", "dolphin-mistral", "7b-v2.6-dpo-laser-q6_K"),
    ),
    ("scheme://host:port/namespace/model:tag", ("host:port", "namespace", "model", "tag")),
    ("host/namespace/model:tag", ("host", "namespace", "model", "tag")),
    ("host:port/namespace/model:tag", ("host:port", "namespace", "model", "tag")),
    ("host/namespace/model", ("host", "namespace", "model", "latest")),
    ("host:port/namespace/model", ("host:port", "namespace", "model", "latest")),
    ("namespace/model", ("registry.ollama.ai", "namespace", "model", "latest")),
    ("model", ("registry.ollama.ai", "library", "model", "latest")),
    ("h/nn/mm:t", ("h", "nn", "mm", "t")),
    (f"{PART80}/{PART80}/{PART80}:{PART80}", (PART80, PART80, PART80, PART80)),
    (f"{PART350}/{PART80}/{PART80}:{PART80}", (PART350, PART80, PART80, PART80)),
    ("_why/_the/_lucky:_stiff", ("_why", "_the", "_lucky", "_stiff")),
    ("host:https/namespace/model:tag", ("host:https", "namespace", "model", "tag")),
    ("https://registry.example.com/ns/m:t", ("registry.example.com", "ns", "m", "t")),
    ("http://localhost:5000/ns/m", ("localhost:5000", "ns", "m", "latest")),
    ("llama3.2", ("registry.ollama.ai", "library", "llama3.2", "latest")),
    ("hf.co/bartowski/Llama-3.2-1B-GGUF:Q4_K_M", ("hf.co", "bartowski", "Llama-3.2-1B-GGUF", "Q4_K_M")),
]


@pytest.mark.parametrize(("text", "parts"), PARSE_CASES)
def test_parse_name_parts(text: str, parts: tuple[str, str, str, str]) -> None:
    name = parse_name(text)
    assert name.parts() == parts
    assert Path(*name.parts()) == Path(*parts)  # Ollama's wantFilepath



def is_valid_name(text: str) -> bool:
    try:
        parse_name(text)
    except InvalidModelName:
        return False
    return True


def test_defaults() -> None:
    assert str(parse_name("xx")) == "registry.ollama.ai/library/xx:latest"
    assert (DEFAULT_HOST, DEFAULT_NAMESPACE, DEFAULT_TAG) == ("registry.ollama.ai", "library", "latest")


# --- Ollama's invalid cases (testCases map, the "false" entries that stay invalid after defaults) --------------

INVALID = [
    "",
    "n/m:",
    "^",
    "mm:",
    "/nn/mm",
    "//",
    "//mm",
    "hh//",
    "//mm:@",
    "00@",
    "@",
    "m@d",  # digests in names are not parsed at this Ollama version
    "-hh/nn/mm:tt",
    "hh/-nn/mm:tt",
    "hh/nn/-mm:tt",
    "hh/nn/mm:-tt",
    "host/name:space/model:tag",
    "a/b/c/d",
    "a:123/aa/bb/cc",
    "8" * 81,
    f"{'3' * 351}/ns/m:t",
    f"h/{'n' * 81}/m:t",
    f"m:{'t' * 81}",
]


@pytest.mark.parametrize("text", INVALID)
def test_invalid_names(text: str) -> None:
    with pytest.raises(InvalidModelName):
        parse_name(text)
    assert not is_valid_name(text)


# --- Ollama's TestNameIsValidPart / TestIsValidNamespace, through full names ---------------------------------


@pytest.mark.parametrize(
    ("host", "valid"), [("a", True), ("a.", True), ("a.b", True), ("a:123", True), ("-a", False), (".a", False)]
)
def test_host_part(host: str, valid: bool) -> None:
    assert is_valid_name(f"{host}/ns/m:t") is valid


@pytest.mark.parametrize(
    ("namespace", "valid"),
    [
        ("bb", True),
        ("a", True),
        ("himynameisreallyreallyreallyreallylongbutitshouldstillbevalid", True),
        ("a.", False),
        ("a:b", False),
    ],
)
def test_namespace_part(namespace: str, valid: bool) -> None:
    assert is_valid_name(f"h/{namespace}/m:t") is valid


def test_model_part_must_start_alphanumeric() -> None:
    assert not is_valid_name("-h")
    assert is_valid_name("_h")


# --- Ollama's TestParseNameFromFilepath, as from_parts --------------------------------------------------------


@pytest.mark.parametrize(
    "parts",
    [("..", "..", "model", "tag"), ("", "namespace", ".", "tag"), (".", ".", ".", "."), ("/", "path", "to", "x")],
)
def test_from_parts_rejects_path_pieces(parts: tuple[str, str, str, str]) -> None:
    with pytest.raises(InvalidModelName):
        ModelName.from_parts(*parts)


def test_from_parts_accepts_real_paths() -> None:
    name = ModelName.from_parts("host:port", "namespace", "model", "tag")
    assert name.display_long() == "host:port/namespace/model:tag"


# --- Ollama's TestDisplayShortest ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shortest"),
    [
        ("registry.ollama.ai/library/model:latest", "model:latest"),
        ("registry.ollama.ai/library/model:tag", "model:tag"),
        ("registry.ollama.ai/namespace/model:tag", "namespace/model:tag"),
        ("host/namespace/model:tag", "host/namespace/model:tag"),
        ("host/library/model:tag", "host/library/model:tag"),
        ("model", "model:latest"),
        ("REGISTRY.OLLAMA.AI/Library/Model:TAG", "Model:TAG"),
    ],
)
def test_display_shortest(text: str, shortest: str) -> None:
    assert parse_name(text).display_shortest() == shortest


def test_display_long_and_key() -> None:
    a, b = parse_name("Llama3:Latest"), parse_name("llama3")
    assert a.display_long() == "registry.ollama.ai/library/Llama3:Latest"
    assert a != b
    assert a.key == b.key


def test_split_scheme() -> None:
    assert split_scheme("http://h/n/m") == ("http", "h/n/m")
    assert split_scheme("HTTPS://h/n/m") == ("https", "h/n/m")
    assert split_scheme("h:1/n/m") == (None, "h:1/n/m")


# --- hostile names --------------------------------------------------------------------------------------------

HOSTILE = [
    "..",
    ".",
    "../../etc/passwd",
    "a/../b",
    "a/../../b:c",
    "model:..",
    "model:.",
    "../model",
    "./model",
    "/etc/passwd",
    "C:\\Windows\\System32",
    "model\\..\\..",
    "mod\x00el",
    "model\x00",
    "mo\ndel",
    "model\r",
    "mod\tel",
    "model\x7f",
    "\uff4dodel",  # fullwidth m
    "mod\u0435l",  # Cyrillic e
    "model\u200b",  # zero-width space
    "model:lat\u0435st",
    "%2e%2e/x",
    "~/model",
    "model name",
    "model:tag/../..",
    "model:latest:extra",
    "host/ns/model:tag:extra",
    "http://",
    "http:///model",
    "file:///etc/passwd",
    "x" * 10_000,
    "a/" * 200 + "m",
    ":tag",
    "ns/:tag",
    "host//m",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_names_are_rejected(text: str) -> None:
    with pytest.raises(InvalidModelName) as info:
        parse_name(text)
    assert str(info.value).startswith("invalid model name")


def test_non_string_is_rejected() -> None:
    with pytest.raises(InvalidModelName):
        parse_name(None)  # type: ignore[arg-type]
    with pytest.raises(InvalidModelName):
        parse_name(b"model")  # type: ignore[arg-type]


def test_error_messages_say_why() -> None:
    with pytest.raises(InvalidModelName, match="tag"):
        parse_name("model:")
    with pytest.raises(InvalidModelName, match="ASCII"):
        parse_name("mod\u0435l")
    with pytest.raises(InvalidModelName, match="control"):
        parse_name("a\x00")
    with pytest.raises(InvalidModelName, match="too many"):
        parse_name("a/b/c/d")
    with pytest.raises(InvalidModelName, match="longer than 80"):
        parse_name("m" * 81)


def test_model_name_is_validated_on_construction() -> None:
    with pytest.raises(InvalidModelName):
        ModelName("h", "n", "..", "t")
    with pytest.raises(InvalidModelName):
        ModelName("h", "n.s", "m", "t")


# --- properties ----------------------------------------------------------------------------------------------

_NAME_ALPHABET = st.sampled_from([*"aZ09_.-:/@\\ \x00~%\u0435", "..", "://", "http://", "registry.ollama.ai"])
name_like_text = st.lists(_NAME_ALPHABET, max_size=30).map("".join)

host_part = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,30}", fullmatch=True)
ns_part = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_\-]{0,30}", fullmatch=True)
model_part = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,30}", fullmatch=True)
valid_names = st.builds(ModelName, host_part, ns_part, model_part, model_part)


@given(st.one_of(st.text(max_size=200), name_like_text))
@settings(max_examples=800, deadline=None)
def test_parse_raises_only_invalid_model_name(text: str) -> None:
    try:
        name = parse_name(text)
    except InvalidModelName:
        return
    assert all(name.parts())


@given(st.one_of(st.text(max_size=120), name_like_text))
@settings(max_examples=800, deadline=None)
def test_manifest_path_stays_inside_the_store(text: str) -> None:
    try:
        name = parse_name(text)
    except InvalidModelName:
        return
    root = Path("/srv/corral-models")
    path = Store(root).manifest_path(name)
    manifests = root / "manifests"
    normalised = Path(os.path.normpath(path))
    assert normalised == path
    assert normalised.parent.parent.parent.parent == manifests
    assert all(part not in ("", ".", "..") for part in name.parts())


@given(valid_names)
@settings(max_examples=500, deadline=None)
def test_display_round_trips(name: ModelName) -> None:
    assert parse_name(name.display_long()) == name
    assert parse_name(name.display_shortest()).key == name.key
    path = Store("/srv/corral-models").manifest_path(name)
    assert path.parts[-4:] == name.parts()
