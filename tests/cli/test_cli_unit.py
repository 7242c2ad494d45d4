"""Unit tests of the ``corral`` command line: output formats against Ollama's rules, argument handling, stdin
joining and error paths. Commands are exercised against a small in-process stub of the API (canned answers,
recorded requests); tests against the real server live elsewhere."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from corral.cli import autostart, display, format, main, modelfile, params, progress, run, turn, views
from corral.cli.client import Client, ClientError
from corral.cli.interactive import Exit, Session
from corral.config import parse_host
from corral.humanize import human_number
from tests.conftest import ROOT

NOW = datetime(2026, 8, 1, 12, 0, 0, tzinfo=UTC)


# ---------------------------------------------------------------------------------------------------------------
# A stub server: routes map (method, path) to a function of the JSON body returning (status, payload); a list
# payload is sent as NDJSON. Every request is recorded.

Route = Callable[[Any], tuple[int, Any]]


class Stub:
    def __init__(self, port: int = 0) -> None:
        self.routes: dict[tuple[str, str], Route] = {}
        self.requests: list[tuple[str, str, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                stub.requests.append((method, self.path, body))
                route = stub.routes.get((method, self.path))
                if route is None:
                    status, payload = (200, None) if self.path == "/" else (404, {"error": "404 page not found"})
                else:
                    status, payload = route(body)
                if isinstance(payload, list):
                    data = b"".join(json.dumps(item).encode() + b"\n" for item in payload)
                    ctype = "application/x-ndjson"
                elif payload is None:
                    data, ctype = b"", "text/plain"
                else:
                    data, ctype = json.dumps(payload).encode(), "application/json"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if method != "HEAD":
                    self.wfile.write(data)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

            def do_HEAD(self) -> None:
                self._serve("HEAD")

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def route(self, method: str, path: str, status: int = 200, payload: Any = None) -> None:
        self.routes[(method, path)] = lambda body: (status, payload)

    def bodies(self, path: str) -> list[Any]:
        return [body for _, p, body in self.requests if p == path]


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Stub]:
    server = Stub()
    server.thread.start()
    monkeypatch.setenv("CORRAL_HOST", f"127.0.0.1:{server.port}")
    monkeypatch.setenv("CORRAL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CORRAL_NOHISTORY", "1")
    yield server
    server.server.shutdown()
    server.server.server_close()


def cli(args: list[str], stdin: str = "") -> tuple[int, str, str]:
    """Run ``corral`` in-process with piped (non-TTY) stdin/stdout/stderr; returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    old = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, sys.stdout, sys.stderr = io.StringIO(stdin), out, err
    try:
        with pytest.raises(SystemExit) as exit_info:
            main.main(args)
    finally:
        sys.stdin, sys.stdout, sys.stderr = old
    return int(exit_info.value.code or 0), out.getvalue(), err.getvalue()


def chat_stream(*pieces: str, thinking: tuple[str, ...] = (), final: dict[str, Any] | None = None) -> list[Any]:
    chunks: list[Any] = [{"model": "m", "message": {"role": "assistant", "content": "", "thinking": t}, "done": False}
                         for t in thinking]
    chunks += [{"model": "m", "message": {"role": "assistant", "content": p}, "done": False} for p in pieces]
    chunks.append({"model": "m", "message": {"role": "assistant", "content": ""}, "done": True,
                   "done_reason": "stop", **(final or {})})
    return chunks


SHOW = {"details": {"family": "llama", "parameter_size": "135M", "quantization_level": "Q8_0"},
        "model_info": {"general.architecture": "llama"}, "capabilities": ["completion"]}


# ---------------------------------------------------------------------------------------------------------------
# format.py


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0 B"), (999, "999 B"), (1000, "1 KB"), (1500, "1.5 KB"), (10_500, "10 KB"), (98_000_000, "98 MB"),
     (270_000_000, "270 MB"), (4_700_000_000, "4.7 GB"), (2_019_393_189, "2.0 GB"), (5_000_000_000, "5 GB"),
     (1_000_000_000_000, "1 TB"), (999_999, "999 KB")],
)
def test_human_bytes_matches_ollama(size: int, text: str) -> None:
    assert format.human_bytes(size) == text


@pytest.mark.parametrize(
    ("count", "text"),
    [(8_030_261_248, "8.0B"), (7_000_000_000, "7B"), (134_515_008, "134.52M"), (135_000_000, "135M"),
     (500_000, "500K"), (999, "999")],
)
def test_human_number(count: int, text: str) -> None:
    assert human_number(count) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.5, "Less than a second"), (1, "1 second"), (59, "59 seconds"), (60, "About a minute"),
     (119, "About a minute"), (120, "2 minutes"), (3599, "59 minutes"), (3600, "About an hour"),
     (5400, "2 hours"), (47 * 3600, "47 hours"), (48 * 3600, "2 days"), (14 * 86400, "2 weeks"),
     (60 * 86400, "2 months"), (17519 * 3600 + 20 * 60, "24 months"), (17519 * 3600 + 30 * 60, "2 years"),
     (26280 * 3600, "3 years")],
)
def test_human_duration_rules(seconds: float, text: str) -> None:
    assert format.human_duration(seconds) == text


def test_human_time_past_future_forever_and_zero() -> None:
    assert format.human_time(NOW - timedelta(hours=2), "Never", NOW) == "2 hours ago"
    assert format.human_time(NOW + timedelta(minutes=4, seconds=30), "Never", NOW) == "4 minutes from now"
    assert format.human_time(NOW + timedelta(days=365 * 200), "Never", NOW) == "Forever"
    assert format.human_time(None, "Never", NOW) == "Never"


def test_parse_time_accepts_go_timestamps() -> None:
    parsed = format.parse_time("2026-08-01T05:00:00.123456789-07:00")
    assert parsed == datetime(2026, 8, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert format.parse_time("0001-01-01T00:00:00Z") is None
    assert format.parse_time("not a time") is None


@pytest.mark.parametrize(
    ("ns", "text"),
    [(0, "0s"), (999, "999ns"), (1500, "1.5µs"), (12_000, "12µs"), (1_500_000, "1.5ms"),
     (1_234_567_891, "1.234567891s"), (5_500_000_000, "5.5s"), (61_000_000_000, "1m1s"),
     (3_600_000_000_000, "1h0m0s"), (-1_500_000, "-1.5ms")],
)
def test_go_duration_string(ns: int, text: str) -> None:
    assert format.go_duration(ns) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [(131072, "131072"), (1e6, "1e+06"), (500000, "500000"), (0.0001, "0.0001"), (0.00001, "1e-05"),
     (8030261248, "8.030261248e+09"), (0.5, "0.5"), (-2.5, "-2.5"), (123456.7, "123456.7")],
)
def test_go_g_float_format(value: float, text: str) -> None:
    assert format.go_g(value) == text


def test_table_layout_is_tablewriters() -> None:
    table = format.render_table([["llama3.2:latest", "a80c4f17acd5", "2.0 GB", "2 hours ago"],
                                 ["smollm2:135m", "9077fe9d2ae1", "270 MB", "3 weeks ago"]],
                                ["NAME", "ID", "SIZE", "MODIFIED"])
    assert table == (
        "NAME               ID              SIZE      MODIFIED    \n"
        "llama3.2:latest    a80c4f17acd5    2.0 GB    2 hours ago    \n"
        "smollm2:135m       9077fe9d2ae1    270 MB    3 weeks ago    \n"
    )
    assert format.render_table([], ["NAME", "ID"]) == "NAME    ID \n"


def test_table_wraps_long_cells_by_words() -> None:
    text = "word " * 12  # 59 characters: wrapped at 30 columns into two balanced lines
    table = format.render_table([["", text.strip()]])
    lines = table.splitlines()
    assert len(lines) == 2
    assert lines[0] == "    word word word word word word    "
    # the empty first column of a continuation line holds tablewriter's two-space filler
    assert lines[1].startswith("      word")


def test_wrap_words_balances_lines() -> None:
    assert format.wrap_words(["aaa", "bb", "cc", "ddddd"], 6) == [["aaa"], ["bb", "cc"], ["ddddd"]]
    assert format.wrap_words(["x" * 12], 5) == [["x" * 12]]


# ---------------------------------------------------------------------------------------------------------------
# views.py


def test_list_table_filters_case_insensitively_and_marks_remote() -> None:
    models = [
        {"name": "Llama3.2:latest", "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
         "size": 2_019_393_189, "modified_at": (NOW - timedelta(hours=2)).isoformat()},
        {"name": "gpt-oss:120b-cloud", "digest": "569662207105" + "0" * 52, "size": 384,
         "modified_at": (NOW - timedelta(days=3)).isoformat(), "remote_host": "https://ollama.com:443"},
    ]
    assert views.list_table(models, "llama", NOW) == (
        "NAME               ID              SIZE      MODIFIED    \n"
        "Llama3.2:latest    a80c4f17acd5    2.0 GB    2 hours ago    \n"
    )
    assert "gpt-oss:120b-cloud    569662207105    -         3 days ago     \n" in views.list_table(models, None, NOW)


@pytest.mark.parametrize(
    ("size", "vram", "text"),
    [(100, 0, "100% CPU"), (100, 100, "100% GPU"), (100, 150, "Unknown"), (100, 48, "52%/48% CPU/GPU"),
     (0, 10, "Unknown")],
)
def test_processor_column(size: int, vram: int, text: str) -> None:
    assert views.processor(size, vram) == text


def test_ps_table_columns_and_until() -> None:
    models = [
        {"name": "smollm2:135m", "model": "smollm2:135m", "digest": "9077fe9d2ae1" + "0" * 52, "size": 271_000_000,
         "size_vram": 0, "context_length": 4096, "expires_at": (NOW + timedelta(minutes=4, seconds=59)).isoformat()},
        {"name": "qwen:0.5b", "model": "qwen:0.5b", "digest": "b5dc5e784f2a" + "0" * 52, "size": 500_000_000,
         "size_vram": 0, "context_length": 2048, "expires_at": (NOW + timedelta(days=365 * 300)).isoformat()},
        {"name": "old:latest", "model": "old:latest", "digest": "c" * 64, "size": 1000, "size_vram": 0,
         "context_length": 8192, "expires_at": (NOW - timedelta(seconds=1)).isoformat()},
    ]
    assert views.ps_table(models, None, NOW) == (
        "NAME            ID              SIZE      PROCESSOR    CONTEXT    UNTIL              \n"
        "smollm2:135m    9077fe9d2ae1    271 MB    100% CPU     4096       4 minutes from now    \n"
        "qwen:0.5b       b5dc5e784f2a    500 MB    100% CPU     2048       Forever               \n"
        "old:latest      cccccccccccc    1 KB      100% CPU     8192       Stopping...           \n"
    )
    assert views.ps_table(models, "qwen", NOW).count("\n") == 2


def test_show_info_layout() -> None:
    resp = {
        "details": {"family": "llama", "parameter_size": "3.2B", "quantization_level": "Q4_K_M"},
        "model_info": {"general.architecture": "llama", "general.parameter_count": 3212749888,
                       "llama.context_length": 131072, "llama.embedding_length": 3072},
        "capabilities": ["completion", "tools"],
        "parameters": 'stop                           "<|eot_id|>"\ntemperature                    0.6',
        "system": "You are helpful.\n\nBe brief.\nThird line.",
        "license": "LLAMA 3.2 COMMUNITY LICENSE AGREEMENT",
    }
    assert views.show_info(resp) == (
        "  Model\n"
        "    architecture        llama     \n"
        "    parameters          3.2B      \n"
        "    context length      131072    \n"
        "    embedding length    3072      \n"
        "    quantization        Q4_K_M    \n"
        "\n"
        "  Capabilities\n"
        "    completion    \n"
        "    tools         \n"
        "\n"
        "  Parameters\n"
        '    stop           "<|eot_id|>"    \n'
        "    temperature    0.6             \n"
        "\n"
        "  System\n"
        "    You are helpful.    \n"
        "    Be brief.           \n"
        "    ...                 \n"
        "\n"
        "  License\n"
        "    LLAMA 3.2 COMMUNITY LICENSE AGREEMENT    \n"
        "\n"
    )


def test_show_info_without_model_info_and_verbose_metadata() -> None:
    resp = {"details": {"family": "bert", "parameter_size": "22M", "quantization_level": "F16"}}
    assert views.show_info(resp).startswith("  Model\n    architecture    bert    \n    parameters      22M     \n")
    verbose = views.show_info({**SHOW, "model_info": {"general.architecture": "llama", "x.list": ["<unk>", "<s>"] * 5,
                                                      "x.flag": True, "x.freq": 1e6}}, verbose=True)
    assert "x.flag                  true" in verbose
    assert "x.freq                  1e+06" in verbose
    assert "x.list                  [<unk> ...+9 more]" in verbose


# ---------------------------------------------------------------------------------------------------------------
# display.py


def _terminal(text: str) -> list[str]:
    """Apply the few ANSI codes WordWrapper uses (cursor left, erase to end of line) to get the visible lines."""
    lines, col = [""], 0
    for token in re.split(r"(\x1b\[\d*[DK]|\n)", text):
        if token == "\n":
            lines.append("")
            col = 0
        elif token.startswith("\x1b[") and token.endswith("D"):
            col -= int(token[2:-1])
        elif token == "\x1b[K":
            lines[-1] = lines[-1][:col]
        elif token:
            lines[-1] = lines[-1][:col] + token + lines[-1][col + len(token):]
            col += len(token)
    return lines


def test_word_wrapper_moves_words_to_the_next_line() -> None:
    wrapper = display.WordWrapper(25)  # wraps at 20 columns
    text = "the quick brown fox jumps over the lazy dog again and again"
    out = "".join(wrapper.feed(piece) for piece in re.findall(r".{1,3}", text))
    lines = _terminal(out)
    assert " ".join(line.strip() for line in lines) == text
    assert all(len(line) <= 20 for line in lines)
    assert len(lines) > 2


def test_word_wrapper_breaks_overlong_words() -> None:
    out = display.WordWrapper(15).feed("x" * 25)
    assert all(len(line) <= 10 for line in _terminal(out))


def test_response_writer_plain_thinking_block() -> None:
    out = io.StringIO()
    writer = display.ResponseWriter(out, ansi=False, wrap_width=None)
    writer.write(thinking="Let me think")
    writer.write(thinking=" more.")
    writer.write(content="Answer.")
    writer.finish()
    assert out.getvalue() == "Thinking...\nLet me think more.\n...done thinking.\n\nAnswer."
    assert writer.content == "Answer."
    assert writer.thinking_text == "Let me think more."


def test_response_writer_ansi_and_hidden_thinking() -> None:
    out = io.StringIO()
    writer = display.ResponseWriter(out, ansi=True, wrap_width=None)
    writer.write(thinking="hmm")
    writer.finish()
    assert out.getvalue() == display.GREY + display.BOLD + "Thinking...\n" + display.RESET + display.GREY + "hmm" + \
        display.RESET
    hidden = io.StringIO()
    writer = display.ResponseWriter(hidden, ansi=False, wrap_width=None, hide_thinking=True)
    writer.write(thinking="secret")
    writer.write(content="visible")
    assert hidden.getvalue() == "visible"


def test_tool_calls_are_described() -> None:
    text = display.tool_calls_text([{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}])
    assert text == "Model called a non-existent function 'get_weather()' with arguments: {\"city\":\"Paris\"}\n"


def test_metrics_summary_block() -> None:
    final = {"total_duration": 2_500_000_000, "load_duration": 12_345_678, "prompt_eval_count": 26,
             "prompt_eval_duration": 130_000_000, "eval_count": 298, "eval_duration": 2_300_000_000}
    assert display.metrics_summary(final) == (
        "total duration:       2.5s\n"
        "load duration:        12.345678ms\n"
        "prompt eval count:    26 token(s)\n"
        "prompt eval duration: 130ms\n"
        "prompt eval rate:     200.00 tokens/s\n"
        "eval count:           298 token(s)\n"
        "eval duration:        2.3s\n"
        "eval rate:            129.57 tokens/s\n"
    )
    assert display.metrics_summary({"eval_count": 3}) == "eval count:           3 token(s)\n"


# ---------------------------------------------------------------------------------------------------------------
# progress.py and transfer.py


def test_bar_line_layout() -> None:
    done = progress.bar_line("pulling 74701a8c35f6", 1_300_000_000, 1_300_000_000, 80, None, False)
    assert done.startswith("pulling 74701a8c35f6: 100% ▕███")
    assert done.endswith("▏ 1.3 GB" + " " * 25)
    assert len(done) == 80 - 1
    running = progress.bar_line("pulling 74701a8c35f6", 1_300_000_000, 650_000_000, 80, 34e6, True)
    assert running.startswith("pulling 74701a8c35f6:  50% ▕")
    assert running.endswith("▏ 650 MB/1.3 GB   34 MB/s     19s")


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (59.4, "59s"), (62, "1m2s"), (3725, "1h2m"),
                                               (100 * 3600, "99h+")])
def test_eta_format(seconds: float, text: str) -> None:
    assert progress.format_eta(seconds) == text


def test_transfer_progress_renders_final_state_when_not_a_terminal() -> None:
    from rich.console import Console

    from corral.cli.transfer import TransferProgress

    buffer = io.StringIO()
    console = Console(file=buffer, width=80, force_terminal=False)
    digest = "sha256:" + "74701a8c35f6" + "0" * 52
    events: list[dict[str, Any]] = [{"status": "pulling manifest"},
              {"status": "pulling 74701a8c35f6", "digest": digest, "total": 1000, "completed": 0},
              {"status": "pulling 74701a8c35f6", "digest": digest, "total": 1000, "completed": 500},
              {"status": "pulling 74701a8c35f6", "digest": digest, "total": 1000, "completed": 1000},
              {"status": "verifying sha256 digest"}, {"status": "writing manifest"}, {"status": "success"}]
    with TransferProgress("pulling", console=console, skip_empty_start=True) as bars:
        for event in events:
            bars.update(event)
    lines = buffer.getvalue().splitlines()
    assert lines[0].rstrip() == "pulling manifest"
    assert lines[1].startswith("pulling 74701a8c35f6: 100% ▕")
    assert [line.rstrip() for line in lines[2:]] == ["verifying sha256 digest", "writing manifest", "success"]


def test_push_destination() -> None:
    from corral.cli.transfer import push_destination

    assert push_destination("registry.ollama.ai/alice/m:latest") == "https://ollama.com/alice/m"
    assert push_destination("127.0.0.1:5000/ns/m:v1") == "127.0.0.1:5000/ns/m:v1"
    assert push_destination("alice/m") == "https://ollama.com/alice/m"
    assert push_destination("library/m:7b") == "https://ollama.com/m:7b"


# ---------------------------------------------------------------------------------------------------------------
# params.py


def test_format_params_types_and_errors() -> None:
    typed = params.format_params({"temperature": ["0.7"], "num_ctx": ["8192"], "stop": ["<a>", "<b>"],
                                  "use_mmap": ["false"]})
    assert typed == {"temperature": 0.7, "num_ctx": 8192, "stop": ["<a>", "<b>"], "use_mmap": False}
    with pytest.raises(params.ParamError, match=r"^unknown parameter 'nope'$"):
        params.format_params({"nope": ["1"]})
    with pytest.raises(params.ParamError, match=r"^invalid int value \[abc\]$"):
        params.format_params({"num_ctx": ["abc"]})
    with pytest.raises(params.ParamError, match=r"^invalid float value \[x\]$"):
        params.format_params({"top_p": ["x"]})


def test_keep_alive_and_think_values() -> None:
    assert params.keep_alive_value("5m") == "5m0s"
    assert params.keep_alive_value("1h30m") == "1h30m0s"
    assert params.keep_alive_value("0") == "0s"
    assert params.keep_alive_value("-1s") == -1
    with pytest.raises(ValueError, match="invalid duration"):
        params.keep_alive_value("soon")
    assert params.think_value("true") is True
    assert params.think_value("false") is False
    assert params.think_value("high") == "high"
    with pytest.raises(params.ParamError, match="invalid value for --think"):
        params.think_value("very")


def test_go_quote() -> None:
    assert params.go_quote("unknown parameter 'x'") == "\"unknown parameter 'x'\""
    assert params.go_quote('a "b"\n') == '"a \\"b\\"\\n"'


# ---------------------------------------------------------------------------------------------------------------
# modelfile.py


def test_modelfile_parse() -> None:
    text = (
        "# a comment\n"
        "FROM llama3.2\n"
        "parameter temperature 0.7\n"
        "PARAMETER stop \"<|eot_id|>\"\n"
        'SYSTEM """You are\n  a pirate."""\n'
        "MESSAGE user hi there\n"
        "LICENSE \"MIT\"\n"
        "TEMPLATE {{ .Prompt }}\n"
    )
    commands = [(c.name, c.args) for c in modelfile.parse(text)]
    assert commands == [("model", "llama3.2"), ("temperature", "0.7"), ("stop", "<|eot_id|>"),
                        ("system", "You are\n  a pirate."), ("message", "user: hi there"), ("license", "MIT"),
                        ("template", "{{ .Prompt }}")]


@pytest.mark.parametrize(
    ("text", "message"),
    [("SYSTEM hi\n", "no FROM line"),
     ("FROM x\nBOGUS y\n", '(line 2): command must be one of "from", "license"'),
     ('FROM x\nSYSTEM """never closed\n', "unexpected EOF"),
     ("FROM x\nMESSAGE robot hi\n", 'message role must be one of "system", "user", or "assistant"')],
)
def test_modelfile_parse_errors(text: str, message: str) -> None:
    with pytest.raises(modelfile.ModelfileError) as info:
        modelfile.parse(text)
    assert message in str(info.value)


def test_modelfile_plan_resolves_files_and_names(tmp_path: Path) -> None:
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 60)
    commands = modelfile.parse("FROM ./tiny.gguf\nPARAMETER num_ctx 2048\nPARAMETER stop a\nPARAMETER stop b\n"
                               "LICENSE one\nLICENSE two\nMESSAGE assistant hello: world\n")
    plan = modelfile.build_plan(commands, tmp_path)
    digest = modelfile.sha256_file(gguf)
    assert plan.files == {gguf.resolve(): digest}
    body = plan.finalize()
    assert body == {"files": {"tiny.gguf": digest}, "parameters": {"num_ctx": 2048, "stop": ["a", "b"]},
                    "license": ["one", "two"], "messages": [{"role": "assistant", "content": "hello: world"}]}
    named = modelfile.build_plan(modelfile.parse("FROM llama3.2:1b\n"), tmp_path)
    assert named.request == {"from": "llama3.2:1b"} and not named.files
    with pytest.raises(modelfile.ModelfileError, match="unknown parameter"):
        modelfile.build_plan(modelfile.parse("FROM x\nPARAMETER bogus 1\n"), tmp_path)


def test_modelfile_directory_and_upload_names(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "model.safetensors").write_bytes(b"x")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "sub" / "extra.json").write_text("{}")
    files = modelfile.file_digests(tmp_path)
    names = sorted(modelfile.upload_names(files).values())
    assert names == ["config.json", "model.safetensors", "sub/extra.json"]
    with pytest.raises(modelfile.ModelfileError, match="no Modelfile or safetensors files found"):
        modelfile.files_for_model(tmp_path / "sub")


# ---------------------------------------------------------------------------------------------------------------
# run.py helpers


def test_join_prompt_puts_stdin_first() -> None:
    assert run.join_prompt(["summarise", "this"], "file text\n") == "file text\n summarise this"
    assert run.join_prompt(["hello"], "") == "hello"
    assert run.join_prompt([], None) == ""


def test_format_field_and_chat_body() -> None:
    assert turn.format_field("json") == "json"
    assert turn.format_field('{"type": "object"}') == {"type": "object"}
    assert turn.format_field("") is None
    opts = turn.RunOptions(model="m", format="json", options={"seed": 1}, think="high", keep_alive="5m0s")
    body = turn.chat_body(opts, [{"role": "user", "content": "x"}])
    assert body == {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True, "format": "json",
                    "options": {"seed": 1}, "think": "high", "keep_alive": "5m0s"}


def test_extract_media(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "cat.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
    text, images = turn.extract_media(f"what is in {image} please")
    assert text == "what is in  please"
    assert len(images) == 1
    assert f"Added image '{image}'" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "data", "message"), [
    ("missing.png", None, "couldn't read image '{path}': no such file"),
    ("notes.png", b"just some text", "invalid image type: {path} (supported: PNG, JPEG, GIF or BMP)"),
    ("photo.webp", b"RIFF\0\0\0\0WEBPVP8 ", "WebP images are not supported: convert it to PNG or JPEG"),
    ("dir.png", "dir", "couldn't read image '{path}': it is a directory"),
])
def test_extract_media_names_the_file_it_cannot_attach(tmp_path: Path, name: str, data: bytes | str | None,
                                                       message: str) -> None:
    path = tmp_path / name
    if data == "dir":
        path.mkdir()
    elif isinstance(data, bytes):
        path.write_bytes(data)
    with pytest.raises(ClientError) as caught:
        turn.extract_media(f"describe {path}")
    assert str(caught.value.message) == message.format(path=path)


def test_extract_media_unreadable_file(tmp_path: Path) -> None:
    # A path through a regular file fails to open for any user, root included (chmod 0 would not stop root).
    parent = tmp_path / "plain"
    parent.write_text("x")
    with pytest.raises(ClientError) as caught:
        turn.extract_media(f"describe {parent}/x.png")
    assert caught.value.message == f"couldn't read image '{parent}/x.png': Not a directory"


# ---------------------------------------------------------------------------------------------------------------
# main.py: argument handling and commands against the stub


def test_normalize_args_gives_bare_flags_their_default() -> None:
    assert main.normalize_args(["run", "m", "--think", "hello"]) == ["run", "m", "--think=true", "hello"]
    assert main.normalize_args(["run", "m", "--think=low"]) == ["run", "m", "--think=low"]
    assert main.normalize_args(["run", "m", "--", "--think"]) == ["run", "m", "--", "--think"]


@pytest.mark.e2e
def test_help_is_fast_to_import() -> None:
    heavy = "('httpx', 'rich', 'prompt_toolkit', 'fastapi', 'xllamacpp', 'gguf')"
    code = f"import sys, corral.cli.main; print([m for m in {heavy} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_help_lists_commands_in_ollamas_order() -> None:
    code, out, _ = cli(["--help"])
    assert code == 0
    names = re.findall(r"^  (\w+)\s", out.split("Commands:")[1], re.M)
    # Ollama's commands in Ollama's order, then Corral's own (export, import, ui, server, service, engine, worker),
    # then help
    assert names == ["serve", "create", "show", "run", "stop", "pull", "push", "list", "ps", "cp", "rm",
                     "export", "import", "ui", "server", "service", "engine", "worker", "help"]
    code, out, _ = cli(["help", "run"])
    assert code == 0 and "Usage: corral run" in out and "OLLAMA_NOHISTORY" in out


def test_list_and_alias(stub: Stub) -> None:
    stub.route("GET", "/api/tags", payload={"models": [
        {"name": "smollm2:135m", "model": "smollm2:135m", "size": 270_000_000, "digest": "9077fe9d2ae1" + "0" * 52,
         "modified_at": datetime.now(UTC).isoformat()}]})
    for command in ("list", "ls"):
        code, out, err = cli([command])
        assert code == 0, err
        assert out.splitlines()[1].startswith("smollm2:135m    9077fe9d2ae1    270 MB    ")


def test_show_not_found_is_one_line_error(stub: Stub) -> None:
    stub.route("POST", "/api/show", 404, {"error": "model 'nope' not found"})
    code, out, err = cli(["show", "nope"])
    assert (code, out, err) == (1, "", "Error: model 'nope' not found\n")


def test_show_flags(stub: Stub) -> None:
    stub.route("POST", "/api/show", payload={**SHOW, "system": "Be nice.", "license": "MIT"})
    assert cli(["show", "m", "--system"]) == (0, "Be nice.", "")
    assert cli(["show", "m", "--license"]) == (0, "MIT\n", "")
    code, _, err = cli(["show", "m", "--license", "--system"])
    assert code == 1 and "only one of '--license'" in err
    assert cli(["show", "m"])[1].startswith("  Model\n    architecture    llama")


def test_cp_rm_stop(stub: Stub) -> None:
    stub.route("POST", "/api/copy")
    stub.route("DELETE", "/api/delete")
    stub.route("POST", "/api/chat", payload=[{"model": "a", "done": True, "done_reason": "unload",
                                              "message": {"role": "assistant", "content": ""}}])
    assert cli(["cp", "a", "b"]) == (0, "copied 'a' to 'b'\n", "")
    assert cli(["rm", "a", "b"]) == (0, "deleted 'a'\ndeleted 'b'\n", "")
    assert stub.bodies("/api/delete") == [{"model": "a"}, {"model": "b"}]
    assert cli(["stop", "a"])[0] == 0
    assert stub.bodies("/api/chat")[-1] == {"model": "a", "messages": [], "keep_alive": 0}
    stub.route("POST", "/api/chat", 404, {"error": "model 'zz' not found"})
    assert cli(["stop", "zz"]) == (1, "", 'Error: couldn\'t find model "zz" to stop\n')


def test_run_one_shot_joins_stdin_and_streams(stub: Stub) -> None:
    stub.route("POST", "/api/show", payload=SHOW)
    stub.routes[("POST", "/api/chat")] = lambda body: (200, chat_stream("Hel", "lo!") if body["messages"] else
                                                      [{"done": True, "done_reason": "load", "message": {}}])
    code, out, err = cli(["run", "m", "--keepalive", "10m", "--format", "json", "say", "hi"], stdin="piped text")
    assert (code, out, err) == (0, "Hello!\n\n", "")
    load, answer = stub.bodies("/api/chat")
    assert load == {"model": "m", "messages": [], "keep_alive": "10m0s"}
    assert answer["messages"] == [{"role": "user", "content": "piped text say hi"}]
    assert answer["format"] == "json" and answer["keep_alive"] == "10m0s" and "think" not in answer


def test_run_thinking_model_and_verbose(stub: Stub) -> None:
    stub.route("POST", "/api/show", payload={**SHOW, "capabilities": ["completion", "thinking"]})
    stub.route("POST", "/api/chat", payload=chat_stream("42", thinking=("ponder",),
                                                        final={"eval_count": 2, "eval_duration": 1_000_000_000}))
    code, out, err = cli(["run", "m", "--verbose", "q"])
    assert code == 0
    assert out == "Thinking...\nponder\n...done thinking.\n\n42\n\n"
    assert "eval rate:            2.00 tokens/s" in err
    assert stub.bodies("/api/chat")[-1]["think"] is True
    code, out, _ = cli(["run", "m", "--think=false", "--hidethinking", "q"])
    assert stub.bodies("/api/chat")[-1]["think"] is False
    assert out == "42\n\n"


def test_run_bad_flags(stub: Stub) -> None:
    code, _, err = cli(["run", "m", "--keepalive", "soon", "x"])
    assert code == 1 and err == 'Error: time: invalid duration "soon"\n'
    code, _, err = cli(["run", "m", "--think=very", "x"])
    assert code == 1 and "invalid value for --think" in err
    assert stub.requests == [] or all(path == "/" for _, path, _ in stub.requests)


def test_run_pulls_missing_model(stub: Stub) -> None:
    shows = iter([(404, {"error": "model 'm' not found"}), (200, SHOW)])
    stub.routes[("POST", "/api/show")] = lambda body: next(shows)
    stub.route("POST", "/api/pull", payload=[{"status": "pulling manifest"}, {"status": "success"}])
    stub.route("POST", "/api/chat", payload=chat_stream("ok"))
    code, out, err = cli(["run", "m", "hi"])
    assert code == 0, err
    assert out == "ok\n\n"
    assert "success" in err
    assert stub.bodies("/api/pull") == [{"model": "m"}]


def test_run_stream_error_mid_answer(stub: Stub) -> None:
    stub.route("POST", "/api/show", payload=SHOW)
    broken = [{"message": {"content": "par"}, "done": False}, {"error": "runner crashed"}]
    stub.routes[("POST", "/api/chat")] = lambda body: (200, broken if body["messages"] else chat_stream())
    code, out, err = cli(["run", "m", "hi"])
    assert code == 1
    assert out == "par"
    assert err.endswith("Error: runner crashed\n")


def test_run_embedding_model(stub: Stub) -> None:
    stub.route("POST", "/api/show", payload={**SHOW, "capabilities": ["embedding"]})
    stub.route("POST", "/api/embed", payload={"embeddings": [[0.1, -0.25]]})
    assert cli(["run", "e", "text", "--dimensions", "2"]) == (0, "[0.1,-0.25]\n", "")
    assert stub.bodies("/api/embed") == [{"model": "e", "input": "text", "dimensions": 2}]
    code, _, err = cli(["run", "e"])
    assert code == 1 and "embedding models require input text" in err


def test_version(stub: Stub) -> None:
    stub.route("GET", "/api/version", payload={"version": "0.1.0"})
    assert cli(["--version"]) == (0, "corral version is 0.1.0\n", "")
    stub.route("GET", "/api/version", payload={"version": "9.9.9"})
    assert cli(["-v"])[1] == "corral version is 9.9.9\nWarning: client version is 0.1.0\n"


def test_version_without_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_HOST", "127.0.0.1:9")
    code, out, _ = cli(["--version"])
    assert code == 0
    assert out == "Warning: could not connect to a running Corral instance\nWarning: client version is 0.1.0\n"


def test_remote_host_that_does_not_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_HOST", "http://corral-test.invalid:11434")
    assert cli(["list"]) == (1, "", "Error: could not connect to corral server at http://corral-test.invalid:11434\n")


def test_pull_push_create_errors_are_one_line(stub: Stub, tmp_path: Path) -> None:
    stub.route("POST", "/api/pull", 200, [{"status": "pulling manifest"},
                                          {"error": "pull model manifest: file does not exist"}])
    code, _, err = cli(["pull", "nope"])
    assert code == 1 and err.splitlines()[-1] == "Error: pull model manifest: file does not exist"
    stub.route("POST", "/api/push", 401, {"error": "unauthorized"})
    code, _, err = cli(["push", "alice/m"])
    assert err.splitlines()[-1] == ("Error: you are not authorized to push to this namespace, create the model "
                                    "under a namespace you own")
    code, _, err = cli(["create", "x", "-f", str(tmp_path / "missing")])
    assert code == 1 and err.splitlines()[-1] == "Error: specified Modelfile wasn't found"


def test_create_uploads_blobs_and_streams(stub: Stub, tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + b"\1" * 100)
    digest = modelfile.sha256_file(gguf)
    (tmp_path / "Modelfile").write_text("FROM ./m.gguf\nSYSTEM hi\n")
    stub.route("HEAD", f"/api/blobs/{digest}", 404)
    stub.route("POST", f"/api/blobs/{digest}", 201)
    stub.route("POST", "/api/create", payload=[{"status": "using existing layer " + digest},
                                               {"status": "writing manifest"}, {"status": "success"}])
    code, _, err = cli(["create", "mine", "-f", str(tmp_path / "Modelfile"), "-q", "q4_K_M"])
    assert code == 0, err
    assert stub.bodies(f"/api/blobs/{digest}") == [None, gguf.read_bytes()]
    assert stub.bodies("/api/create") == [{"model": "mine", "files": {"m.gguf": digest}, "system": "hi",
                                           "quantize": "q4_K_M"}]
    assert "success" in err


def test_autostart_spawns_and_waits(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A loopback address with nothing listening: the CLI starts a server itself and waits for it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("CORRAL_HOST", f"127.0.0.1:{port}")
    monkeypatch.setenv("CORRAL_HOME", str(tmp_path))
    started: list[Stub] = []

    class Running:
        pid = os.getpid()  # a live process, so the record of the started server has a real start time

        def poll(self) -> None:
            return None

    def come_up() -> None:
        server = Stub(port)
        server.route("GET", "/api/tags", payload={"models": []})
        server.thread.start()
        started.append(server)

    def fake_spawn(log_file: Path) -> Running:
        assert log_file == tmp_path / "logs" / "server.log"
        threading.Timer(0.3, come_up).start()  # the "server" starts listening a little later
        return Running()

    monkeypatch.setattr(autostart, "spawn_server", fake_spawn)
    try:
        code, out, err = cli(["list"])
    finally:
        for server in started:
            server.server.shutdown()
            server.server.server_close()
    assert code == 0
    assert out == "NAME    ID    SIZE    MODIFIED \n"
    assert err == f"Starting corral server in the background (log: {tmp_path / 'logs' / 'server.log'})\n"
    assert len(started) == 1
    assert (tmp_path / "server.pid").read_text().splitlines()[:2] == [str(os.getpid()), f"127.0.0.1:{port}"]


@pytest.mark.e2e
def test_autostart_reports_a_server_that_dies(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CORRAL_HOST", "127.0.0.1:9")
    monkeypatch.setenv("CORRAL_HOME", str(tmp_path))

    def dying(log_file: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])

    monkeypatch.setattr(autostart, "spawn_server", dying)
    code, _, err = cli(["ps"])
    assert code == 1
    assert err.splitlines()[-1] == (f"Error: corral server exited during startup (exit status 3); see "
                                    f"{tmp_path / 'logs' / 'server.log'}")


def test_local_addresses_are_started_remote_ones_are_not() -> None:
    from corral.cli.client import is_local

    assert is_local(parse_host("127.0.0.1:11434")) and is_local(parse_host("localhost"))
    assert is_local(parse_host("0.0.0.0:11434")) and is_local(parse_host("[::1]:11434"))
    assert not is_local(parse_host("http://10.1.2.3:11434"))


def test_spawn_server_is_detached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_popen(argv: list[str], **kwargs: Any) -> str:
        seen.update(kwargs, argv=argv)
        return "proc"

    monkeypatch.setattr(autostart.subprocess, "Popen", fake_popen)
    log_file = tmp_path / "logs" / "server.log"
    assert autostart.spawn_server(log_file) == "proc"
    assert seen["argv"] == [sys.executable, "-m", "corral", "serve"]
    assert seen["start_new_session"] is True and seen["stderr"] == subprocess.STDOUT
    assert log_file.parent.is_dir()


@pytest.mark.e2e
def test_broken_pipe_exits_quietly() -> None:
    result = subprocess.run(
        f"{sys.executable} -m corral help | head -c 1", shell=True, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.stderr == ""


# ---------------------------------------------------------------------------------------------------------------
# interactive.py: line handling without a terminal


@pytest.fixture
def session(stub: Stub) -> Iterator[tuple[Session, list[turn.RunOptions], io.StringIO, io.StringIO]]:
    sent: list[turn.RunOptions] = []

    def fake_chat(client: Client, opts: turn.RunOptions) -> dict[str, Any]:
        sent.append(turn.RunOptions(**{**opts.__dict__, "messages": list(opts.messages)}))
        return {"role": "assistant", "content": f"reply {len(sent)}"}

    out, err = io.StringIO(), io.StringIO()
    with Client(parse_host(f"127.0.0.1:{stub.port}")) as client:
        yield Session(client, turn.RunOptions(model="m"), out=out, err=err, chat_fn=fake_chat), sent, out, err


def test_session_sends_messages_and_keeps_history(session: Any) -> None:
    s, sent, _, _ = session
    s.handle("hello")
    s.handle("again")
    assert [m["content"] for m in sent[1].messages] == ["hello", "reply 1", "again"]
    assert s.opts.messages[-1] == {"role": "assistant", "content": "reply 2"}


def test_session_attaches_image_paths_for_a_vision_model(session: Any, tmp_path: Path) -> None:
    import base64

    from tests.vision_fixture import png_bytes

    s, sent, _, err = session
    s.opts.multimodal = True
    image = tmp_path / "red.png"
    image.write_bytes(png_bytes(2, 2, (255, 0, 0)))
    s.handle(f"what is in {image}?")
    assert sent[0].messages[-1] == {"role": "user", "content": "what is in ?",
                                    "images": [base64.b64encode(image.read_bytes()).decode()]}
    s.handle(str(image))  # a line that starts with the path is an image, not an unknown /command
    assert sent[1].messages[-1]["images"] and sent[1].messages[-1]["content"] == ""
    s.handle(f"and {tmp_path}/gone.png")  # a missing file: said, and nothing is sent or kept
    assert len(sent) == 2 and len(s.opts.messages) == 4
    assert err.getvalue().endswith(f"Error: couldn't read image '{tmp_path}/gone.png': no such file\n")


def test_session_multiline_input(session: Any) -> None:
    s, sent, _, _ = session
    s.handle('"""first line')
    assert s.use_alt_prompt and not sent
    s.handle("second line")
    s.handle('third"""')
    assert sent[0].messages[-1]["content"] == "first line\nsecond line\nthird"
    s.handle('"""one liner"""')
    assert sent[1].messages[-1]["content"] == "one liner"


def test_session_set_commands(session: Any) -> None:
    s, _, out, err = session
    for line in ("/set parameter temperature 0.5", "/set parameter stop a b", "/set parameter bogus 1",
                 "/set format json", "/set noformat", "/set verbose", "/set nowordwrap", "/set think low",
                 "/set system Be terse.", "/set frobnicate"):
        s.handle(line)
    assert s.opts.options == {"temperature": 0.5, "stop": ["a", "b"]}
    assert s.opts.format == "" and s.opts.verbose and not s.opts.word_wrap and s.opts.think == "low"
    assert s.opts.messages == [{"role": "system", "content": "Be terse."}]
    assert out.getvalue().splitlines() == [
        "Set parameter 'temperature' to '0.5'",
        "Set parameter 'stop' to 'a, b'",
        "Couldn't set parameter: \"unknown parameter 'bogus'\"",
        "Set format to 'json' mode.",
        "Disabled format.",
        "Set 'verbose' mode.",
        "Set 'nowordwrap' mode.",
        "Set 'think' mode to 'low'.",
        "Set system message.",
        "Unknown command '/set frobnicate'. Type /? for help",
    ]
    assert 'warning: model "m" does not support thinking output' in err.getvalue() or err.getvalue() == ""


def test_session_multiline_system_and_clear(session: Any) -> None:
    s, _, out, _ = session
    s.handle('/set system """You are')
    s.handle('a pirate."""')
    assert s.opts.system == "You are\na pirate."
    s.handle("hi")
    s.handle("/clear")
    assert s.opts.messages == [{"role": "system", "content": "You are\na pirate."}]
    assert out.getvalue().splitlines() == ["Set system message.", "Cleared session context"]


def test_session_show_help_bye_and_unknown(session: Any, stub: Stub) -> None:
    s, _, out, err = session
    stub.route("POST", "/api/show", payload={**SHOW, "template": "{{ .Prompt }}"})
    s.handle("/show template")
    s.handle("/show license")
    s.handle("/show info")
    s.handle("/?")
    s.handle("/whatever")
    assert out.getvalue().splitlines() == ["{{ .Prompt }}", "No license was specified for this model.",
                                           "Unknown command '/whatever'. Type /? for help"]
    assert "  Model\n" in err.getvalue() and "Available Commands:" in err.getvalue()
    assert stub.bodies("/api/show")[0] == {"model": "m"}
    with pytest.raises(Exit):
        s.handle("/bye")


def test_session_load_and_save(session: Any, stub: Stub) -> None:
    s, _, out, err = session
    stub.route("POST", "/api/chat", 404, {"error": "model 'nope' not found"})
    s.handle("hello")
    s.handle("/load nope")
    assert s.opts.model == "m" and len(s.opts.messages) == 2
    assert err.getvalue() == "Error: model 'nope' not found\n"
    stub.route("POST", "/api/create", 400, {"error": "invalid model name"})
    s.handle("/save bad/name/x/y")
    stub.route("POST", "/api/create", payload=[{"status": "success"}])
    s.handle("/set parameter seed 3")
    s.handle("/save mine")
    assert out.getvalue().splitlines()[-3:] == ["error: The model name 'bad/name/x/y' is invalid",
                                                "Set parameter 'seed' to '3'", "Created new model 'mine'"]
    assert stub.bodies("/api/create")[-1] == {
        "model": "mine", "from": "m", "parameters": {"seed": 3},
        "messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "reply 1"}]}


def test_session_failed_turn_leaves_no_question(stub: Stub) -> None:
    def failing(client: Client, opts: turn.RunOptions) -> dict[str, Any]:
        raise ClientError("boom", 500)

    with Client(parse_host(f"127.0.0.1:{stub.port}")) as client:
        s = Session(client, turn.RunOptions(model="m"), out=io.StringIO(), err=io.StringIO(), chat_fn=failing)
        with pytest.raises(ClientError):
            s.handle("hello")
        assert s.opts.messages == []
