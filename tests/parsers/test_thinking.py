"""Thinking parsing on the Go-template path: InferTags on real templates, recorded outputs fed whole, split at
every point and chunked at random, Ollama's streaming cases step by step, and arbitrary text."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.parsers import ThinkingParser, infer_thinking_tags
from corral.templates.gotemplate import parse
from tests.conftest import FIXTURES

CASES: list[dict[str, Any]] = json.loads((FIXTURES / "model_outputs" / "thinking.json").read_text(encoding="utf-8"))[
    "cases"
]


def template(rel: str) -> Any:
    return parse((FIXTURES / rel).read_text(encoding="utf-8"))


def run(tags: tuple[str, str], chunks: list[str], prompt: str = "") -> tuple[str, str]:
    """Feed the chunks, then finish; the concatenated (thinking, content)."""
    p = ThinkingParser(*tags, prompt=prompt)
    thinking: list[str] = []
    content: list[str] = []
    for c in chunks:
        t, x = p.add(c)
        thinking.append(t)
        content.append(x)
    t, x = p.finish()
    thinking.append(t)
    content.append(x)
    return "".join(thinking), "".join(content)


def split(s: str, cuts: list[int]) -> list[str]:
    points = sorted({min(max(c, 0), len(s)) for c in cuts})
    bounds = [0, *points, len(s)]
    return [s[a:b] for a, b in itertools.pairwise(bounds)]


# ---------------------------------------------------------------------------------------------------------------
# InferTags


@pytest.mark.parametrize(
    ("rel", "tags"),
    [
        ("ollama_templates/deepseek.gotmpl", ("<think>", "</think>")),
        ("model_outputs/templates/qwen3.gotmpl", ("<think>", "</think>")),
        ("model_outputs/templates/gemma3-thinking.gotmpl", ("<unused94>", "<unused95>")),
        ("ollama_templates/qwen2.5.gotmpl", None),
        ("ollama_templates/llama3-instruct.gotmpl", None),
        ("ollama_templates/command-r.gotmpl", None),
        ("ollama_templates/mistral-instruct.gotmpl", None),
        ("model_outputs/templates/llama3.2.gotmpl", None),
    ],
)
def test_infer_thinking_tags_on_real_templates(rel: str, tags: tuple[str, str] | None) -> None:
    assert infer_thinking_tags(template(rel)) == tags


@pytest.mark.parametrize(
    ("src", "tags"),
    [
        # Ollama's thinking/template_test.go cases
        (
            "{{ if .Thinking}}/think{{ end }}{{- range $i, $_ := .Messages }}"
            "{{- $last := eq (len (slice $.Messages $i)) 1 -}}"
            "{{ if and $last .Thinking }}\n<think>{{ .Thinking }}</think>\n{{ end }}{{ end }}",
            ("<think>", "</think>"),
        ),
        (
            "{{- range $i, $_ := .Messages }}{{- range $j, $_ := .NotMessages }}"
            "{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ end }}{{ end }}",
            None,
        ),
        (
            "{{- range $i, $_ := .Messages }}{{ if .Thinking }}\n\t\tSome text before   {{ .Thinking }}"
            "    Some text after\n{{ end }}{{ end }}",
            ("Some text before", "Some text after"),
        ),
        # .Thinking outside the loop over messages does not count
        ("{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}", None),
        # the last .Thinking reference in the template wins
        (
            "{{ range .Messages }}[A]{{ .Thinking }}[/A]{{ if .Thinking }}<B>{{ .Thinking }}</B>{{ end }}{{ end }}",
            ("<B>", "</B>"),
        ),
        # one tag alone is no use
        ("{{ range .Messages }}<think>{{ .Thinking }}{{ end }}", None),
        ("{{ range .Messages }}{{ .Content }}{{ end }}", None),
    ],
)
def test_infer_thinking_tags_shapes(src: str, tags: tuple[str, str] | None) -> None:
    assert infer_thinking_tags(parse(src)) == tags


def test_recorded_cases_use_the_tags_their_template_gives() -> None:
    for case in CASES:
        assert infer_thinking_tags(template(case["template"])) is not None, case["id"]


# ---------------------------------------------------------------------------------------------------------------
# Recorded outputs


def tags_of(case: dict[str, Any]) -> tuple[str, str]:
    tags = infer_thinking_tags(template(case["template"]))
    assert tags is not None
    return tags


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_recorded(case: dict[str, Any]) -> None:
    tags, out, want = tags_of(case), case["output"], (case["thinking"], case["content"])
    assert run(tags, [out], case["prompt"]) == want
    assert run(tags, list(out), case["prompt"]) == want
    for i in range(len(out) + 1):
        assert run(tags, [out[:i], out[i:]], case["prompt"]) == want
    for i in range(0, len(out) + 1, 3):
        for j in range(i, len(out) + 1, 2):
            assert run(tags, [out[:i], out[i:j], out[j:]], case["prompt"]) == want


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_recorded_random_chunking(data: st.DataObject) -> None:
    case = data.draw(st.sampled_from(CASES))
    out = case["output"]
    cuts = data.draw(st.lists(st.integers(0, len(out)), max_size=40))
    assert run(tags_of(case), split(out, cuts), case["prompt"]) == (case["thinking"], case["content"])


# Ollama's thinking/parser_test.go: whole inputs, then streaming steps with the output expected after each step.
EXTRACT = [
    ("<think> internal </think> world", "internal ", "world"),
    ("<think>a</think><think>b</think>c", "a", "<think>b</think>c"),
    ("no think", "", "no think"),
]


@pytest.mark.parametrize(("out", "thinking", "content"), EXTRACT)
def test_ollama_extract(out: str, thinking: str, content: str) -> None:
    assert ThinkingParser("<think>", "</think>").add(out) == (thinking, content)


STEPS: list[tuple[str, list[tuple[str, str, str]]]] = [
    ("content without a thinking tag", [("  abc", "", "  abc"), ("def", "", "def")]),
    ("content before a thinking tag nerfs it", [("  abc <think>def</think> ghi", "", "  abc <think>def</think> ghi")]),
    ("building up a thinking tag partially", [("  <th", "", ""), ("in", "", ""), ("k>a", "a", "")]),
    ("partial closing tag", [("<think>abc</th", "abc", ""), ("ink>def", "", "def")]),
    (
        "partial closing tag fakeout",
        [("<think>abc</th", "abc", ""), ("ing>def", "</thing>def", ""), ("ghi</thi", "ghi", ""), ("nk>jkl", "", "jkl")],
    ),
    ("whitespace after thinking tag", [("  <think>abc</think>\n\ndef", "abc", "def")]),
    ("whitespace after thinking tag (incremental)", [("  <think>abc</think>", "abc", ""), ("\n\ndef", "", "def")]),
    ("more whitespace", [("  <think>abc</think>\n\ndef ", "abc", "def "), (" ghi", "", " ghi")]),
    (
        "token by token",
        [
            ("<think>", "", ""),
            ("\n", "", ""),
            ("</think>", "", ""),
            ("\n\n", "", ""),
            ("Hi", "", "Hi"),
            (" there", "", " there"),
        ],
    ),
    (
        "leading thinking whitespace",
        [
            ("  <think>   \t ", "", ""),
            ("  these are some ", "these are some ", ""),
            ("thoughts </think>  ", "thoughts ", ""),
            ("  more content", "", "more content"),
        ],
    ),
]


@pytest.mark.parametrize(("desc", "steps"), STEPS, ids=[s[0] for s in STEPS])
def test_ollama_streaming_steps(desc: str, steps: list[tuple[str, str, str]]) -> None:
    p = ThinkingParser("<think>", "</think>")
    for i, (chunk, thinking, content) in enumerate(steps):
        assert p.add(chunk) == (thinking, content), (desc, i)


def test_prefeed_from_prompt() -> None:
    # the prompt ends with the open tag (whitespace after it ignored): the output starts inside the thinking part
    p = ThinkingParser("<think>", "</think>", prompt="<|im_start|>assistant\n<think>\n\n")
    assert p.add("\nPlanning.") == ("Planning.", "")
    assert p.add("</think>Done") == ("", "Done")
    # a prompt that closed thinking (think=false) does not pre-feed
    p = ThinkingParser("<think>", "</think>", prompt="<｜Assistant｜><think> </think>\n")
    assert p.add("Hello") == ("", "Hello")


def test_finish_flushes_what_was_held() -> None:
    p = ThinkingParser("<think>", "</think>")
    assert p.add("  <thi") == ("", "")
    assert p.finish() == ("", "  <thi")
    p = ThinkingParser("<think>", "</think>")
    assert p.add("<think>abc</thi") == ("abc", "")
    assert p.finish() == ("</thi", "")
    p = ThinkingParser("<think>", "</think>")
    assert p.add("<think>abc</think>\n") == ("abc", "")
    assert p.finish() == ("", "")
    assert ThinkingParser("<think>", "</think>").finish() == ("", "")


def test_empty_tags_are_refused() -> None:
    with pytest.raises(ValueError):
        ThinkingParser("", "</think>")


def test_streaming_cost_is_linear() -> None:
    body = "thinking about < and </thin and </ things " * 20_000
    out = "<think>" + body + "</think>answer"
    chunks = [out[i : i + 3] for i in range(0, len(out), 3)]
    t0 = time.perf_counter()
    assert run(("<think>", "</think>"), chunks) == (body, "answer")
    assert time.perf_counter() - t0 < 5.0


# ---------------------------------------------------------------------------------------------------------------
# Arbitrary text

FRAGMENTS = ["<think>", "</think>", "<th", "ink>", "</", "<", ">", " ", "\n", "\t", "a", "<unused94>", "<unused95>"]
TAG_PAIRS = [("<think>", "</think>"), ("<unused94>", "<unused95>"), ("[THINK]", "[/THINK]")]


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(TAG_PAIRS),
    st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=3), max_size=30).map("".join),
    st.lists(st.integers(0, 200), max_size=20),
    st.booleans(),
)
def test_arbitrary_text_never_raises_and_chunking_does_not_matter(
    tags: tuple[str, str], out: str, cuts: list[int], prefed: bool
) -> None:
    prompt = "x" + tags[0] + "\n" if prefed else ""
    whole = run(tags, [out], prompt)
    assert run(tags, split(out, cuts), prompt) == whole
    assert run(tags, list(out), prompt) == whole
    thinking, content = whole
    if not prefed and not out.lstrip().startswith(tags[0]):
        assert whole == ("", out)  # no thinking part: the output is untouched content
    assert len(thinking) + len(content) <= len(out)
