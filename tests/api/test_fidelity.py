"""Fields Corral accepts are honoured as Ollama honours them (issue 18), through the real server with the clients
that hit the differences: the ``ollama`` library's own examples, LangChain, the OpenAI and Anthropic SDKs."""

from __future__ import annotations

import httpx
import ollama
import pytest
from langchain_ollama import ChatOllama

from tests.conftest import MODEL, ServerProcess

pytestmark = pytest.mark.e2e

GREEDY = {"temperature": 0, "num_predict": 8}


@pytest.fixture(scope="module")
def short_name(server: ServerProcess) -> str:
    """A copy of the bundled model under a name without a tag, so it resolves to ``smol:latest``."""
    httpx.post(server.url + "/api/copy", json={"source": MODEL, "destination": "smol"}).raise_for_status()
    return "smol"


# -- prompt_eval_count counts the whole prompt; the cached part is its own field ------------------------------------


def test_langchain_usage_counts_the_whole_prompt_every_time(server: ServerProcess) -> None:
    """An identical chat twice: the second is served mostly from the prefix cache, and LangChain's usage metadata
    must still count every prompt token (it reported input_tokens: 1 before)."""
    llm = ChatOllama(model=MODEL, base_url=server.url, temperature=0, num_predict=5)
    question = "Name one colour of the rainbow, please."
    first = llm.invoke(question).usage_metadata
    second = llm.invoke(question).usage_metadata
    assert first is not None and second is not None
    assert first["input_tokens"] == second["input_tokens"] > 10
    assert second["total_tokens"] == second["input_tokens"] + second["output_tokens"]


def test_native_final_carries_the_cached_part_and_v1_does_not_double_count(server: ServerProcess) -> None:
    client = ollama.Client(host=server.url)
    messages = [{"role": "user", "content": "Write the word 'pear' and stop."}]
    cold = client.chat(model=MODEL, messages=messages, options=GREEDY)
    warm = client.chat(model=MODEL, messages=messages, options=GREEDY)
    raw = httpx.post(server.url + "/api/chat", json={"model": MODEL, "messages": messages, "stream": False,
                                                     "options": GREEDY}, timeout=120).json()
    assert cold.prompt_eval_count == warm.prompt_eval_count == raw["prompt_eval_count"]
    assert 0 < raw["prompt_eval_cached_count"] < raw["prompt_eval_count"]
    oai = httpx.post(server.url + "/v1/chat/completions", json={"model": MODEL, "messages": messages,
                                                                "temperature": 0, "max_tokens": 8}, timeout=120)
    usage = oai.json()["usage"]
    assert usage["prompt_tokens"] == raw["prompt_eval_count"]
    assert 0 < usage["prompt_tokens_details"]["cached_tokens"] < usage["prompt_tokens"]


# -- the model is named as the client named it ------------------------------------------------------------------------


def test_every_route_echoes_the_model_name_as_sent(server: ServerProcess, short_name: str) -> None:
    client = ollama.Client(host=server.url)
    assert client.generate(model=short_name, prompt="Hi", options=GREEDY).model == short_name
    assert client.chat(model=short_name, messages=[{"role": "user", "content": "Hi"}], options=GREEDY).model \
        == short_name
    chunks = list(client.chat(model=short_name, messages=[{"role": "user", "content": "Hi"}], options=GREEDY,
                              stream=True))
    assert {c.model for c in chunks} == {short_name}
    assert client.generate(model=short_name).model == short_name  # a load
    assert client.embed(model="all-minilm", input="hello").model == "all-minilm"
    spelled = "SmolLM2:135M"  # names match case-insensitively; the answer keeps the client's spelling
    assert client.generate(model=spelled, prompt="Hi", options=GREEDY).model == spelled
    with server.client() as c:
        body = {"model": short_name, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
        assert c.post("/v1/chat/completions", json=body).json()["model"] == short_name
        assert c.post("/v1/messages", json=body).json()["model"] == short_name
        ps = c.get("/api/ps").json()["models"]
        assert "smol:latest" in {m["name"] for m in ps} or MODEL in {m["name"] for m in ps}
