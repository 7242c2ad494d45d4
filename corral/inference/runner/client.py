"""The client for one runner: llama-server's own HTTP API, over a Unix socket (or loopback TCP).

A small HTTP/1.1 client of its own rather than httpx: each streamed token costs one server-sent event, and httpx's
line iterator (httpcore, h11, anyio) spends about twice the CPU per event of the reader below, CPU taken from the
engine's own threads on a small machine (docs/benchmarks.md). The engine closes its connection after every stream
anyway, and a Unix-socket connect costs microseconds, so every request opens a connection of its own and says
``Connection: close``: no pool, and no retry after racing a close.

Cancellation is a closed connection: when the API client goes away, the caller stops iterating, the connection is
closed, and the engine frees the slot at once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

from corral.errors import RunnerReplyError, RunnerUnreachable


def _error_message(body: bytes) -> str:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return body.decode(errors="replace")[:500]
    err = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(err, dict):
        return str(err.get("message") or err)
    return str(err)


class RunnerClient:
    """``url`` is ``http://127.0.0.1:PORT`` or ``unix:///path/to/engine.sock``, as the runner announced it."""

    def __init__(self, url: str, api_key: str) -> None:
        self.base_url = url
        self._api_key = api_key
        self._socket: str | None = None
        self._tcp: tuple[str, int] = ("127.0.0.1", 80)
        if url.startswith("unix://"):
            self._socket = url[len("unix://"):]
            self._authority = "engine"
        else:
            parts = urlsplit(url)
            self._tcp = (parts.hostname or "127.0.0.1", parts.port or 80)
            self._authority = f"{self._tcp[0]}:{self._tcp[1]}"

    async def healthy(self) -> bool:
        try:
            await asyncio.wait_for(self.get("/health"), 10.0)
        except (RunnerReplyError, RunnerUnreachable, TimeoutError):
            return False
        return True

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        return await self._request("POST", path, body)

    async def get(self, path: str) -> Any:
        return await self._request("GET", path, None)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            if self._socket is not None:
                return await asyncio.wait_for(asyncio.open_unix_connection(self._socket, limit=1 << 20), 10.0)
            return await asyncio.wait_for(asyncio.open_connection(*self._tcp, limit=1 << 20), 10.0)
        except (OSError, TimeoutError) as exc:
            raise RunnerUnreachable(f"cannot connect to the engine: {exc}") from exc

    async def _open(self, method: str, path: str, body: dict[str, Any] | None, *, accept: str = "application/json",
                    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int, bool, int | None]:
        """Send one request on a new connection and read the response head."""
        payload = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self._authority}\r\nAuthorization: Bearer {self._api_key}\r\n"
            f"Content-Type: application/json\r\nAccept: {accept}\r\nContent-Length: {len(payload)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        reader, writer = await self._connect()
        try:
            writer.write(head + payload)
            status, chunked, length = await _read_head(reader)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            writer.close()
            raise RunnerUnreachable(f"engine connection broke: {exc}") from exc
        except BaseException:
            writer.close()
            raise
        return reader, writer, status, chunked, length

    async def _request(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        reader, writer, status, chunked, length = await self._open(method, path, body)
        try:
            data = await _read_body(reader, chunked, length)
        finally:
            writer.close()
        if status >= 400:
            raise RunnerReplyError(_error_message(data), status)
        try:
            return json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RunnerReplyError(f"the engine answered {path} with invalid JSON") from exc

    async def stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """POST with ``stream: true`` and yield each server-sent event's JSON object."""
        reader, writer, status, chunked, length = await self._open(
            "POST", path, {**body, "stream": True}, accept="text/event-stream")
        try:
            if status >= 400:
                raise RunnerReplyError(_error_message(await _read_body(reader, chunked, length)), status)
            async for event in _events(_body_chunks(reader, chunked)):
                yield event
        finally:
            writer.close()

    async def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        data = await self.post("/tokenize", {"content": text, "add_special": add_special, "parse_special": True})
        return [int(t) for t in data.get("tokens", [])]

    async def detokenize(self, tokens: list[int]) -> str:
        data = await self.post("/detokenize", {"tokens": tokens})
        return str(data.get("content", ""))


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, bool, int | None]:
    """The status code, whether the body is chunked, and its Content-Length if one was given."""
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    chunked, length = False, None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
        elif name == "content-length":
            length = int(value.strip())
    return status, chunked, length


async def _read_body(reader: asyncio.StreamReader, chunked: bool, length: int | None) -> bytes:
    if not chunked and length is not None:
        try:
            return await reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise RunnerUnreachable(f"engine connection broke: {exc}") from exc
    return b"".join([piece async for piece in _body_chunks(reader, chunked)])


async def _body_chunks(reader: asyncio.StreamReader, chunked: bool) -> AsyncIterator[bytes]:
    """The body's bytes as they arrive; a chunked body is de-framed, anything else runs to the close."""
    try:
        if not chunked:
            while data := await reader.read(1 << 16):
                yield data
            return
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:
                return
            data = await reader.readexactly(size + 2)
            yield data[:-2]
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        raise RunnerUnreachable(f"engine connection broke mid-stream: {exc}") from exc


async def _events(chunks: AsyncIterator[bytes]) -> AsyncIterator[dict[str, Any]]:
    """Server-sent events: ``data: {json}`` blocks separated by a blank line; ``[DONE]`` ends the stream."""
    buf = b""
    async for data in chunks:
        buf += data
        while (end := buf.find(b"\n\n")) >= 0:
            block, buf = buf[:end], buf[end + 2:]
            for line in block.split(b"\n"):
                if line.startswith(b"data: "):
                    payload = line[6:]
                    if payload == b"[DONE]":
                        return
                    event = json.loads(payload)
                    if isinstance(event, dict) and isinstance(event.get("error"), dict | str):
                        raise RunnerReplyError(_error_message(payload))
                    yield event
                elif line.startswith(b"error: "):
                    raise RunnerReplyError(_error_message(line[7:]))
