"""Fields Corral accepts are honoured as Ollama honours them (issue 18), through the real server with the clients
that hit the differences: the ``ollama`` library's own examples, LangChain, the OpenAI and Anthropic SDKs."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest
from langchain_ollama import ChatOllama

from corral.store import manifest as mf
from corral.store.names import parse_name
from corral.store.store import Store
from tests.conftest import MODEL, ServerProcess, native_tools_model

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


# -- logprobs ------------------------------------------------------------------------------------------------------


def _print_logprobs(logprobs: Iterable[Any], label: str) -> None:
    """The ``ollama`` library's logprobs examples (examples/generate-logprobs.py, chat-logprobs.py) print each
    token and its alternatives this way; a missing or misshapen field fails here as it failed there."""
    print(f"\n{label}:")
    for entry in logprobs:
        token = entry.get("token", "")
        logprob = entry.get("logprob")
        print(f"  token={token!r:<12} logprob={logprob:.3f}")
        for alt in entry.get("top_logprobs", []):
            if alt["token"] != token:
                print(f'    alt -> {alt["token"]!r:<12} ({alt["logprob"]:.3f})')


def test_the_ollama_librarys_logprobs_examples(server: ServerProcess, capsys: pytest.CaptureFixture[str]) -> None:
    """The examples' calls, with the bundled model and a token limit and seed added (sampled freely, a 135M model
    can ramble on for thousands of tokens)."""
    client = ollama.Client(host=server.url)
    bounded = {"num_predict": 48, "seed": 1}
    response = client.generate(model=MODEL, prompt="hi! be concise.", logprobs=True, top_logprobs=3,
                               options=bounded)
    print("Generate response:", response["response"])
    _print_logprobs(response.get("logprobs", []), "generate logprobs")
    chat = client.chat(model=MODEL, messages=[{"role": "user", "content": "hi! be concise."}], logprobs=True,
                       top_logprobs=3, options=bounded)
    print("Chat response:", chat["message"]["content"])
    _print_logprobs(chat.get("logprobs", []), "chat logprobs")
    out = capsys.readouterr().out
    assert "generate logprobs:" in out and "chat logprobs:" in out and "alt ->" in out
    for answer, text in ((response, response.response), (chat, chat.message.content)):
        assert answer.logprobs and "".join(e.token for e in answer.logprobs) == text
        assert all(len(e.top_logprobs or ()) == 3 and e.logprob <= 0 for e in answer.logprobs)


@pytest.mark.parametrize("native", [False, True])
def test_greedy_tokens_are_the_top_ones_and_join_to_the_text(server: ServerProcess, native: bool) -> None:
    model = native_tools_model(server, "native-fidelity") if native else MODEL
    client = ollama.Client(host=server.url)
    opts = {"temperature": 0, "num_predict": 16}
    messages = [{"role": "user", "content": "Name three fruits."}]
    whole = client.chat(model=model, messages=messages, options=opts, logprobs=True, top_logprobs=2)
    assert whole.logprobs and "".join(e.token for e in whole.logprobs) == whole.message.content
    for e in whole.logprobs:
        assert e.top_logprobs and e.top_logprobs[0].token == e.token and e.top_logprobs[0].logprob == e.logprob
        assert all(e.top_logprobs[0].logprob >= alt.logprob for alt in e.top_logprobs)
    chunks = list(client.chat(model=model, messages=messages, options=opts, logprobs=True, top_logprobs=2,
                              stream=True))
    assert [e.token for c in chunks for e in c.logprobs or ()] == [e.token for e in whole.logprobs]
    for c in chunks:  # each chunk carries the tokens of its own text
        assert "".join(e.token for e in c.logprobs or ()) == c.message.content
    plain = client.chat(model=model, messages=messages, options=opts, logprobs=True)
    assert plain.logprobs and all(e.top_logprobs is None for e in plain.logprobs)
    assert client.chat(model=model, messages=messages, options=opts).logprobs is None


def test_a_stop_string_cuts_its_tokens_out_of_the_logprobs(server: ServerProcess) -> None:
    client = ollama.Client(host=server.url)
    r = client.generate(model=MODEL, prompt="1, 2, 3,", raw=True, logprobs=True, top_logprobs=1,
                        options={"temperature": 0, "num_predict": 30, "stop": [", 7"]})
    assert r.response == " 4, 5, 6" and r.done_reason == "stop"
    assert [e.token for e in r.logprobs or ()] == [" ", "4", ",", " ", "5", ",", " ", "6"]


def test_top_logprobs_out_of_range_is_ollamas_400(server: ServerProcess) -> None:
    with server.client() as c:
        for path, body in (("/api/generate", {"prompt": "hi"}), ("/api/chat", {"messages": []})):
            r = c.post(path, json={"model": MODEL, "logprobs": True, "top_logprobs": 21, **body})
            assert r.status_code == 400 and r.json() == {"error": "top_logprobs must be between 0 and 20"}
        r = c.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "x"}],
                                                 "logprobs": True, "top_logprobs": -1})
        assert r.status_code == 400 and "top_logprobs must be between 0 and 20" in r.json()["error"]["message"]


def test_openai_sdk_logprobs_on_chat_completions_and_responses(server: ServerProcess) -> None:
    oai = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=120)
    messages = [{"role": "user", "content": "hi! be concise."}]
    r = oai.chat.completions.create(model=MODEL, messages=messages, logprobs=True, top_logprobs=3, temperature=0,
                                    max_tokens=12)
    choice = r.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    assert "".join(t.token for t in choice.logprobs.content) == choice.message.content
    assert all(t.top_logprobs[0].token == t.token and len(t.top_logprobs) == 3 for t in choice.logprobs.content)
    assert bytes(choice.logprobs.content[0].bytes or []).decode() == choice.logprobs.content[0].token
    assert oai.chat.completions.create(model=MODEL, messages=messages, max_tokens=4).choices[0].logprobs is None

    text, tokens = "", []
    for chunk in oai.chat.completions.create(model=MODEL, messages=messages, logprobs=True, top_logprobs=1,
                                             temperature=0, max_tokens=12, stream=True):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            tokens += chunk.choices[0].logprobs.content if chunk.choices[0].logprobs else []
    assert text == choice.message.content and "".join(t.token for t in tokens) == text

    legacy = oai.completions.create(model=MODEL, prompt="Count: 1, 2, 3,", logprobs=2, temperature=0, max_tokens=8)
    lp = legacy.choices[0].logprobs
    assert lp is not None and "".join(lp.tokens or []) == legacy.choices[0].text
    assert lp.top_logprobs and all(len(alts) == 2 for alts in lp.top_logprobs)
    assert lp.text_offset == [sum(len(t) for t in (lp.tokens or [])[:i]) for i in range(len(lp.tokens or []))]

    resp = oai.responses.create(model=MODEL, input="hi! be concise.", include=["message.output_text.logprobs"],
                                top_logprobs=2, temperature=0, max_output_tokens=12)
    part = resp.output[0].content[0]
    assert part.type == "output_text" and "".join(t.token for t in part.logprobs or []) == part.text
    assert resp.top_logprobs == 2
    streamed = ""
    deltas: list[str] = []
    with oai.responses.stream(model=MODEL, input="hi! be concise.", include=["message.output_text.logprobs"],
                              top_logprobs=2, temperature=0, max_output_tokens=12) as events:
        for event in events:
            if event.type == "response.output_text.delta":
                streamed += event.delta
                deltas += [t.token for t in event.logprobs]
    assert streamed == part.text and "".join(deltas) == streamed


# -- the bundled model takes tools, as Ollama's library smollm2 does --------------------------------------------------


def add_two_numbers(a: int, b: int) -> int:
    """
    Add two numbers

    Args:
      a (int): The first number
      b (int): The second number

    Returns:
      int: The sum of the two numbers
    """
    return int(a) + int(b)


def subtract_two_numbers(a: int, b: int) -> int:
    """
    Subtract two numbers
    """
    return int(a) - int(b)


SUBTRACT_TOOL = {"type": "function", "function": {
    "name": "subtract_two_numbers", "description": "Subtract two numbers",
    "parameters": {"type": "object", "required": ["a", "b"], "properties": {
        "a": {"type": "integer", "description": "The first number"},
        "b": {"type": "integer", "description": "The second number"}}}}}
FUNCTIONS = {"add_two_numbers": add_two_numbers, "subtract_two_numbers": subtract_two_numbers}


def _run_calls(calls: Iterable[Any]) -> list[tuple[str, int]]:
    """The tools example's loop: call each named function with the model's arguments."""
    return [(call.function.name, FUNCTIONS[call.function.name](**call.function.arguments)) for call in calls
            if call.function.name in FUNCTIONS]


def test_the_ollama_librarys_tools_example_runs_on_the_bundled_model(server: ServerProcess) -> None:
    """examples/tools.py with the bundled model: tools are accepted (was 400 "does not support tools"), the
    model's answer comes back, and any call it makes runs; then the example's second turn (the tool's result sent
    back with the assistant's call) gets an answer. The 135M model seldom calls on its own (0 of 15 tries in
    the measurements), so the turn with a call is the example's own history shape, sent as it sends it."""
    client = ollama.Client(host=server.url)
    messages: list[Any] = [{"role": "user", "content": "What is three plus one?"}]
    response = client.chat(MODEL, messages=messages, tools=[add_two_numbers, SUBTRACT_TOOL],
                           options={"num_predict": 64})
    assert response.message.role == "assistant" and (response.message.content or response.message.tool_calls)
    for name, output in _run_calls(response.message.tool_calls or ()):
        assert name in FUNCTIONS and isinstance(output, int)

    call = ollama.Message.ToolCall(function=ollama.Message.ToolCall.Function(
        name="add_two_numbers", arguments={"a": 3, "b": 1}))
    [(name, output)] = _run_calls([call])
    messages.append(ollama.Message(role="assistant", content="", tool_calls=[call]))
    messages.append({"role": "tool", "content": str(output), "tool_name": name})
    final = client.chat(MODEL, messages=messages, options={"num_predict": 32, "temperature": 0})
    assert final.message.content.strip()


def test_a_call_in_the_bundled_templates_format_is_generated_and_parsed(server: ServerProcess) -> None:
    """The template's call format end to end with the real model: a required call (tool_choice, constrained to the
    template's <tool_call>[ prefix) comes back as a parsed call, runs, and its result goes back in."""
    oai = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=120)
    tools: list[Any] = [{"type": "function", "function": {
        "name": "add_two_numbers", "description": "Add two numbers",
        "parameters": {"type": "object", "required": ["a", "b"],
                       "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}}}, SUBTRACT_TOOL]
    r = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "What is three plus one?"}],
                                    tools=tools, tool_choice="required", temperature=0)
    [call] = r.choices[0].message.tool_calls or []
    assert r.choices[0].finish_reason == "tool_calls" and call.function.name in FUNCTIONS
    result = FUNCTIONS[call.function.name](**json.loads(call.function.arguments))
    follow = oai.chat.completions.create(model=MODEL, temperature=0, max_tokens=24, tools=tools, messages=[
        {"role": "user", "content": "What is three plus one?"}, r.choices[0].message,  # type: ignore[list-item]
        {"role": "tool", "tool_call_id": call.id, "content": str(result)}])
    assert follow.choices[0].message.content


def test_the_bundled_templates_call_text_parses_into_calls() -> None:
    """What Ollama's smollm2 emits for calls (a JSON list in <tool_call>), read by the parser the bundled template
    selects, streamed a character at a time."""
    from corral.authoring.bundled import builtin_template
    from corral.parsers.shaping import OutputShaper
    from corral.store.model import parse_template

    template = parse_template(builtin_template("smollm2")[0])
    tools = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}} for n in FUNCTIONS]
    text = ('<tool_call>[\n{"name": "add_two_numbers", "arguments": {"a": 3, "b": 1}},\n'
            '{"name": "subtract_two_numbers", "arguments": {"a": 9, "b": 4}}\n]</tool_call>')
    shaper = OutputShaper.for_request(template, "<|im_start|>assistant\n", think=False, tools=tools)
    results = [shaper.add(ch) for ch in text] + [shaper.finish()]
    calls = [c for _, _, found in results for c in found]
    assert "".join(content for _, content, _ in results) == ""
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in calls] == [
        ("add_two_numbers", {"a": 3, "b": 1}), ("subtract_two_numbers", {"a": 9, "b": 4})]


# -- Anthropic's count_tokens -----------------------------------------------------------------------------------


@pytest.mark.parametrize("native", [False, True])
def test_anthropic_count_tokens_matches_what_the_message_uses(server: ServerProcess, native: bool) -> None:
    """The SDK's messages.count_tokens (404 before) counts the prompt /v1/messages builds: the same number its
    usage reports, with system, tools and the model's own template (rendered path) or the engine's (native)."""
    claude = anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0, timeout=120)
    model = native_tools_model(server, "native-fidelity") if native else MODEL
    tool = {"name": "lookup", "description": "Look a word up", "input_schema": {
        "type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]}}
    cases: list[dict[str, Any]] = [
        {"messages": [{"role": "user", "content": "What is the capital of France?"}]},
        {"system": "Answer in one word.", "messages": [
            {"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": [{"type": "text", "text": "And of Italy?"}]}]},
        {"messages": [{"role": "user", "content": "Define 'corral'."}], "tools": [tool]},
    ]
    counts = []
    for case in cases:
        counted = claude.messages.count_tokens(model=model, **case).input_tokens
        used = claude.messages.create(model=model, max_tokens=1, **case).usage.input_tokens
        assert counted == used > 5, case
        counts.append(counted)
    if not native:  # the bundled template's tools block is in the prompt (the GGUF's own template has none)
        assert counts[2] > counts[0] + 100
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.count_tokens(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.BadRequestError, match="messages is required"):
        claude.messages.count_tokens(model=model, messages=[])


# -- a model re-created while loaded ------------------------------------------------------------------------------


def test_a_recreated_model_runs_its_new_definition_and_ps_says_so(server: ServerProcess) -> None:
    """Re-created on the same weights while loaded: the next request uses the new template (its prompt is longer
    by the new prefix) on the same runner, and /api/ps shows the digest /api/tags shows."""
    client = ollama.Client(host=server.url)
    name = "recreated:latest"

    def create(template: str) -> str:
        client.create(model=name, from_=MODEL, template=template)
        return next(m.digest for m in client.list().models if m.model == name)

    def run() -> ollama.GenerateResponse:
        return client.generate(model=name, prompt="apple", options={"temperature": 0, "num_predict": 2})

    first_digest = create("{{ .Prompt }}")
    first = run()
    second_digest = create("Translate this word into French, then stop: {{ .Prompt }}")
    assert second_digest != first_digest
    second = run()
    assert (second.load_duration or 0) < (first.load_duration or 1)  # no reload: the weights are the same
    assert (second.prompt_eval_count or 0) > (first.prompt_eval_count or 0) + 5
    ps = {m.model: m.digest for m in client.ps().models}
    assert ps.get(name) == second_digest


# -- the fields no test exercised before: think levels, hidethinking, suffix, truncate/shift, context, raw ---------

THINKING = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ if $.Think }}<think>
{{ end }}"""
# The same, reading the level (as gpt-oss's template does): "high" adds an instruction to the prompt.
LEVELS = THINKING.replace("<|im_start|>assistant\n", '{{ if eq $.ThinkLevel "high" }}<|im_start|>system\n'
                          "Think step by step, then check every step twice.<|im_end|>\n"
                          "{{ end }}<|im_start|>assistant\n")
FIM = ("{{- if .Suffix }}<|fim_prefix|>{{ .Prompt }}<|fim_suffix|>{{ .Suffix }}<|fim_middle|>"
       "{{ else }}{{ .Prompt }}{{ end }}")


def _derived(server: ServerProcess, name: str, template: str) -> str:
    """The bundled weights under another template, answers capped at 48 tokens (so the CLI's runs stay short)."""
    store = Store(server.models)
    record = store.read_manifest(store.resolve(MODEL))
    layers = [la for la in record.manifest.layers
              if la.media_type not in (mf.MEDIA_TEMPLATE, mf.MEDIA_SYSTEM, mf.MEDIA_PARAMS)]
    for media_type, data in ((mf.MEDIA_TEMPLATE, template.encode()),
                             (mf.MEDIA_PARAMS, json.dumps({"num_predict": 48, "stop": ["<|im_end|>"]}).encode())):
        digest, size = store.write_bytes(data)
        layers.append(mf.Layer(mediaType=media_type, digest=digest, size=size))
    store.write_manifest(parse_name(name), mf.Manifest(config=record.manifest.config, layers=layers))
    return name


def test_think_levels_are_honoured_where_the_template_reads_them_and_refused_elsewhere(server: ServerProcess
                                                                                       ) -> None:
    """Ollama's rule: a level (low/medium/high) is a 400 for a model that cannot act on it, where Corral used to
    turn it quietly into plain thinking; a template that reads .ThinkLevel gets it."""
    client = ollama.Client(host=server.url)
    plain = _derived(server, "think-plain", THINKING)
    levels = _derived(server, "think-levels", LEVELS)
    msgs = [{"role": "user", "content": "What is 3 + 4?"}]
    opts = {"temperature": 0, "num_predict": 4}
    for call in (lambda: client.chat(model=plain, messages=msgs, think="low", options=opts),
                 lambda: client.generate(model=plain, prompt="3 + 4?", think="high", options=opts)):
        with pytest.raises(ollama.ResponseError) as info:
            call()
        assert info.value.status_code == 400 and "is not supported for this model" in info.value.error
    oai = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=120)
    with pytest.raises(openai.BadRequestError, match='think value "low" is not supported for this model'):
        oai.chat.completions.create(model=plain, messages=msgs, reasoning_effort="low", max_tokens=4)
    assert client.chat(model=plain, messages=msgs, think=True, options=opts).message.thinking
    low = client.chat(model=levels, messages=msgs, think="low", options=opts)
    high = client.chat(model=levels, messages=msgs, think="high", options=opts)
    assert low.message.thinking and high.message.thinking
    assert (high.prompt_eval_count or 0) > (low.prompt_eval_count or 0) + 10
    # Anthropic's effort on a template without levels is thinking (Ollama relaxes thinking for that API).
    claude = anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0, timeout=120)
    m = claude.messages.create(model=plain, max_tokens=8, messages=msgs,
                               extra_body={"output_config": {"effort": "low"}})
    assert any(block.type == "thinking" for block in m.content)


def test_hidethinking_hides_what_the_model_thinks(server: ServerProcess) -> None:
    model = _derived(server, "think-plain", THINKING)
    env = {**server.env, "NO_COLOR": "1"}

    def run(*flags: str) -> str:
        done = subprocess.run([sys.executable, "-m", "corral", "run", model, *flags, "What is 3 + 4?"], env=env,
                              text=True, capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    shown, hidden = run("--think"), run("--think", "--hidethinking")
    assert "Thinking..." in shown  # the model thinks (its prompt opens <think>), and the CLI shows it
    assert "Thinking..." not in hidden


def test_suffix_renders_the_fill_in_middle_template(server: ServerProcess) -> None:
    model = _derived(server, "fim-smol", FIM)
    client = ollama.Client(host=server.url)
    assert "insert" in (client.show(model).capabilities or [])
    r = client.generate(model=model, prompt="def add(a, b):\n    ", suffix="\n    return c\n",
                        options={"temperature": 0, "num_predict": 8})
    expected = "<|fim_prefix|>def add(a, b):\n    <|fim_suffix|>\n    return c\n<|fim_middle|>"
    with server.client() as c:
        tokens = c.post("/api/tokenize", json={"model": model, "content": expected}).json()["tokens"]
    assert r.prompt_eval_count == len(tokens)  # exactly the rendered fill-in-middle prompt (no BOS in SmolLM2)
    assert r.context is not None and r.context[:len(tokens)] == tokens


def test_context_round_trip_replays_the_earlier_turn(server: ServerProcess) -> None:
    client = ollama.Client(host=server.url)
    first = client.generate(model=MODEL, prompt="My name is Ada. Remember it.", options={"temperature": 0,
                                                                                        "num_predict": 12})
    assert first.context
    second = client.generate(model=MODEL, prompt="What is my name?", context=first.context,
                             options={"temperature": 0, "num_predict": 12})
    assert second.context and second.context[:len(first.context)] == first.context
    # The earlier turn is the new prompt's beginning, so the prefix cache serves (most of) it.
    raw = httpx.post(server.url + "/api/generate", timeout=120, json={
        "model": MODEL, "prompt": "What is my name?", "context": first.context, "stream": False,
        "options": {"temperature": 0, "num_predict": 12}}).json()
    assert raw["prompt_eval_count"] == second.prompt_eval_count > len(first.context)
    assert raw["prompt_eval_cached_count"] >= len(first.context) - 1


def test_raw_sends_the_prompt_as_it_is(server: ServerProcess) -> None:
    client = ollama.Client(host=server.url)
    text = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    raw = client.generate(model=MODEL, prompt=text, raw=True, options={"temperature": 0, "num_predict": 6})
    templated = client.generate(model=MODEL, prompt="Hi", options={"temperature": 0, "num_predict": 6})
    assert raw.response == templated.response and raw.prompt_eval_count == templated.prompt_eval_count
    assert raw.context is None


def test_truncate_and_shift(server: ServerProcess) -> None:
    """truncate (default): a prompt over num_ctx is cut to fit, keeping its start and end; false: Ollama's 400.
    shift false: generation stops with "length" when the context is full; by default the engine shifts on."""
    long = "word " * 700
    opts = {"num_ctx": 512, "num_predict": 4, "temperature": 0}
    with server.client() as c:
        cut = c.post("/api/generate", json={"model": MODEL, "prompt": long, "stream": False, "options": opts})
        assert cut.status_code == 200 and cut.json()["prompt_eval_count"] == 511
        chat = c.post("/api/chat", json={"model": MODEL, "stream": False, "options": opts,
                                         "messages": [{"role": "user", "content": long}]})
        assert chat.status_code == 200 and chat.json()["prompt_eval_count"] == 511
        for path, body in (("/api/generate", {"prompt": long}),
                           ("/api/chat", {"messages": [{"role": "user", "content": "hi"},
                                                       {"role": "assistant", "content": "hello"},
                                                       {"role": "user", "content": long}]})):
            refused = c.post(path, json={"model": MODEL, "stream": False, "options": opts, "truncate": False,
                                         **body})
            assert refused.status_code == 400
            assert "exceeds the available context size (512 tokens)" in refused.json()["error"]
        counting = {"model": MODEL, "raw": True, "stream": False, "prompt": ", ".join(map(str, range(1, 41))) + ",",
                    "options": {"num_ctx": 256, "num_predict": 300, "temperature": 0}}
        stopped = c.post("/api/generate", json={**counting, "shift": False}).json()
        assert stopped["done_reason"] == "length"
        assert stopped["prompt_eval_count"] + stopped["eval_count"] == 256
        shifted = c.post("/api/generate", json=counting).json()
        assert shifted["eval_count"] == 300
