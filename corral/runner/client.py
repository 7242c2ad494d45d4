"""The HTTP client for one runner: llama-server's own API, streamed with httpx.

Cancellation is a closed connection: when the API client goes away, the caller stops iterating, the response is
closed, and the engine frees the slot at once.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx


class EngineError(RuntimeError):
    """The engine answered with an error (``status`` is its HTTP status)."""

    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.status = status


class EngineUnreachable(RuntimeError):
    """The connection to the engine failed or broke mid-stream: the runner has most likely died."""


def _error_message(body: bytes) -> str:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return body.decode(errors="replace")[:500]
    err = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(err, dict):
        return str(err.get("message") or err)
    return str(err)


class EngineClient:
    def __init__(self, base_url: str, api_key: str) -> None:
        self.base_url = base_url
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=httpx.Timeout(None, connect=10.0),
            # The engine drops idle keep-alive connections after 5 s; let ours go first.
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64, keepalive_expiry=2.0),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def healthy(self) -> bool:
        try:
            r = await self._http.get("/health", timeout=10.0)
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    async def _send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        """Send once more if a pooled connection turned out to be closed before any response came."""
        try:
            return await self._http.send(request, stream=stream)
        except (httpx.RemoteProtocolError, httpx.ConnectError, httpx.ReadError):
            pass
        try:
            return await self._http.send(request, stream=stream)
        except httpx.HTTPError as exc:
            raise EngineUnreachable(str(exc) or type(exc).__name__) from exc

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        r = await self._send(self._http.build_request("POST", path, json=body))
        if r.status_code >= 400:
            raise EngineError(_error_message(r.content), r.status_code)
        return r.json()

    async def get(self, path: str) -> Any:
        r = await self._send(self._http.build_request("GET", path))
        if r.status_code >= 400:
            raise EngineError(_error_message(r.content), r.status_code)
        return r.json()

    async def stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """POST with ``stream: true`` and yield each server-sent event's JSON object."""
        r = await self._send(self._http.build_request("POST", path, json={**body, "stream": True}), stream=True)
        try:
            if r.status_code >= 400:
                raise EngineError(_error_message(await r.aread()), r.status_code)
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    if line.startswith("error: "):
                        raise EngineError(_error_message(line[7:].encode()))
                    continue
                payload = line[6:]
                if payload == "[DONE]":
                    return
                event = json.loads(payload)
                if "error" in event and isinstance(event["error"], dict | str):
                    raise EngineError(_error_message(payload.encode()))
                yield event
        except httpx.HTTPError as exc:
            raise EngineUnreachable(str(exc) or type(exc).__name__) from exc
        finally:
            await r.aclose()

    async def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        data = await self.post("/tokenize", {"content": text, "add_special": add_special, "parse_special": True})
        return [int(t) for t in data.get("tokens", [])]

    async def detokenize(self, tokens: list[int]) -> str:
        data = await self.post("/detokenize", {"tokens": tokens})
        return str(data.get("content", ""))
