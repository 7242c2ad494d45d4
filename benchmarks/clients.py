"""The benchmark's clients: streaming requests to Corral (NDJSON) and to the bare engine (SSE), and a minimal
keep-alive HTTP/1.1 load generator for the latency test.

Both streaming clients return the same ``Stream`` record, timed on the client with ``time.perf_counter``.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from corral.inference import options

BASE_MODEL = "smollm2:135m"
MODEL = "bench-smollm2:chatml"
"""The bundled weights with Corral's ``chatml`` template, this SYSTEM and these stops, made at the start of every
run (``create_bench_model``): the prompts the harness sends the bare engine are ChatML text it renders itself, and
they stay byte-identical to Corral's whatever template the bundled model carries (Ollama's library smollm2 since
issue 18)."""
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
STOP = ["<|im_start|>", "<|im_end|>"]  # chatml.json


def create_bench_model(url: str) -> None:
    """Make ``MODEL`` in the server's store: the bundled weights, Corral's chatml template, ``SYSTEM``, ``STOP``."""
    from corral.authoring.bundled import builtin_template

    template, _params = builtin_template("chatml")
    body = {"model": MODEL, "from": BASE_MODEL, "template": template, "system": SYSTEM,
            "parameters": {"stop": STOP}, "stream": False}
    r = httpx.post(url + "/api/create", json=body, timeout=300)
    if r.status_code != 200:
        raise RuntimeError(f"cannot create {MODEL}: HTTP {r.status_code}: {r.text[:300]}")
TIMEOUT = httpx.Timeout(300.0, connect=10.0)
# Every measured request gets a connection of its own, on both sides: the engine closes its connection after each
# streamed response, and a client that tries to reuse it races that close ("Server disconnected without sending a
# response"). Corral is treated the same way so that connection setup costs both sides alike.
FRESH = {"Connection": "close"}


@dataclass
class Stream:
    """One streamed completion as the client saw it, plus the engine's own timings."""

    sent: float
    chunks: list[float] = field(default_factory=list)  # arrival time of each non-empty content chunk
    done: float = 0.0  # arrival of the final event
    text: str = ""
    eval_count: int = 0
    eval_s: float = 0.0
    prompt_n: int = 0
    prompt_s: float = 0.0
    load_s: float = 0.0

    @property
    def ttft(self) -> float:
        """Seconds from sending the request to the first content chunk."""
        return (self.chunks[0] if self.chunks else self.done) - self.sent

    @property
    def engine_decode_rate(self) -> float:
        """eval_count / eval_duration: tokens per second as the engine timed them."""
        return self.eval_count / self.eval_s if self.eval_s > 0 else 0.0

    @property
    def wall_decode_rate(self) -> float:
        """Content chunks per second between the first and the last, as the client received them."""
        if len(self.chunks) < 2:
            return 0.0
        return (len(self.chunks) - 1) / (self.chunks[-1] - self.chunks[0])

    @property
    def prompt_rate(self) -> float:
        """prompt tokens / prompt eval duration, as the engine timed them."""
        return self.prompt_n / self.prompt_s if self.prompt_s > 0 else 0.0

    @property
    def tail(self) -> float:
        """Seconds from the last content chunk to the final event (work done after the last token)."""
        return self.done - (self.chunks[-1] if self.chunks else self.sent)


def chatml(messages: list[dict[str, str]]) -> str:
    """The prompt Corral renders for the bundled model (its ``chatml`` Go template), ready for the reply."""
    body = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return body + "<|im_start|>assistant\n"


def engine_fields(num_predict: int, temperature: float = 0.0, num_ctx: int = 4096) -> dict[str, Any]:
    """The sampling fields Corral sends to the engine for these options and the bundled model's params."""
    merged = options.merge({"stop": STOP}, {"temperature": temperature, "num_predict": num_predict})
    return options.engine_sampling(merged, num_ctx)


def corral_stream(client: httpx.Client, path: str, body: dict[str, Any]) -> Stream:
    """POST a streaming ``/api/generate`` or ``/api/chat`` and time its NDJSON lines."""
    out = Stream(sent=time.perf_counter())
    parts: list[str] = []
    with client.stream("POST", path, json={**body, "stream": True}, headers=FRESH) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{path}: HTTP {r.status_code}: {r.read()[:300]!r}")
        for line in r.iter_lines():
            if not line:
                continue
            now = time.perf_counter()
            event = json.loads(line)
            if "error" in event:
                raise RuntimeError(f"{path}: {event['error']}")
            piece = event.get("response")
            if piece is None:
                piece = (event.get("message") or {}).get("content", "")
            if piece:
                out.chunks.append(now)
                parts.append(piece)
            if event.get("done"):
                out.done = now
                out.eval_count = int(event.get("eval_count", 0))
                out.eval_s = event.get("eval_duration", 0) / 1e9
                out.prompt_n = int(event.get("prompt_eval_count", 0))
                out.prompt_s = event.get("prompt_eval_duration", 0) / 1e9
                out.load_s = event.get("load_duration", 0) / 1e9
    out.text = "".join(parts)
    return out


def direct_stream(client: httpx.Client, prompt: str, fields: dict[str, Any]) -> Stream:
    """POST a streaming ``/completion`` to the bare engine, with the body Corral would send, and time its events."""
    out = Stream(sent=time.perf_counter())
    parts: list[str] = []
    body = {"prompt": prompt, "cache_prompt": True, **fields, "stream": True}
    with client.stream("POST", "/completion", json=body, headers=FRESH) as r:
        if r.status_code != 200:
            raise RuntimeError(f"/completion: HTTP {r.status_code}: {r.read()[:300]!r}")
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            now = time.perf_counter()
            event = json.loads(line[6:])
            piece = event.get("content", "")
            if piece:
                out.chunks.append(now)
                parts.append(piece)
            if event.get("stop"):
                out.done = now
                timings = event.get("timings", {})
                out.eval_count = int(timings.get("predicted_n", 0))
                out.eval_s = float(timings.get("predicted_ms", 0.0)) / 1e3
                out.prompt_n = int(timings.get("prompt_n", 0))
                out.prompt_s = float(timings.get("prompt_ms", 0.0)) / 1e3
    out.text = "".join(parts)
    return out


# -- a minimal HTTP/1.1 load generator ---------------------------------------------------------------------------


def _request_bytes(method: str, path: str, host: str, body: dict[str, Any] | None) -> bytes:
    payload = json.dumps(body).encode() if body is not None else b""
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
    return (head + "\r\n").encode() + payload


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one response with a Content-Length body (or chunked); returns the status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def _hammer(host: str, port: int, request: bytes, count: int, latencies: list[float], errors: list[str],
                  start: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    await start.wait()
    try:
        for _ in range(count):
            t0 = time.perf_counter()
            writer.write(request)
            await writer.drain()
            status = await _read_response(reader)
            latencies.append(time.perf_counter() - t0)
            if status != 200:
                errors.append(f"HTTP {status}")
    except (OSError, asyncio.IncompleteReadError) as exc:
        errors.append(repr(exc))
    finally:
        writer.close()


def hammer(port: int, method: str, path: str, body: dict[str, Any] | None, clients: int,
           per_client: int) -> tuple[list[float], list[str], float]:
    """``clients`` keep-alive connections, each sending ``per_client`` requests back to back, all at once.

    Returns (latencies in seconds, errors, wall seconds). A hand-written client keeps the load generator's own CPU
    cost small next to the server's on a 2-core machine."""
    host = "127.0.0.1"
    request = _request_bytes(method, path, f"{host}:{port}", body)
    latencies: list[float] = []
    errors: list[str] = []

    async def main() -> float:
        start = asyncio.Event()
        tasks = [asyncio.create_task(_hammer(host, port, request, per_client, latencies, errors, start))
                 for _ in range(clients)]
        await asyncio.sleep(0.2)  # let every connection open first
        t0 = time.perf_counter()
        start.set()
        await asyncio.gather(*tasks)
        return time.perf_counter() - t0

    wall = asyncio.run(main())
    return latencies, errors, wall
