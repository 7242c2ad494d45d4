"""A small synchronous client for Corral's (Ollama's) native API, used by every CLI command.

Every failure surfaces as :class:`ClientError` carrying the server's ``error`` text, so commands print one line and
never a traceback. Streams are NDJSON; an ``{"error": ...}`` line mid-stream is raised like an HTTP error.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from corral import __version__, config
from corral.config import HostPort
from corral.errors import ClientError, ConnectError

__all__ = ["Client", "ClientError", "ConnectError", "is_local"]

USER_AGENT = (
    f"corral/{__version__} ({platform.machine()} {platform.system().lower()}) Python/{platform.python_version()}"
)


def is_local(host: HostPort) -> bool:
    """Loopback, or the unspecified address a server bound to all interfaces is reached at from this machine."""
    return host.is_loopback or host.host in ("0.0.0.0", "::", "")


def _error_text(response: httpx.Response, body: bytes) -> str:
    """The server's ``{"error": ...}`` text, else the raw body, else the status line."""
    text = body.decode("utf-8", "replace").strip()
    try:
        payload = json.loads(text) if text else None
    except ValueError:
        payload = None
    if isinstance(payload, dict) and payload.get("error"):
        return str(payload["error"])
    if text:
        return text
    return f"{response.status_code} {response.reason_phrase}".strip()


class Client:
    """One HTTP connection pool to the server; create it once per command and :meth:`close` it."""

    def __init__(self, host: HostPort, *, connect_timeout: float = 5.0) -> None:
        self.host = host
        # No read timeout: loading a large model can take minutes before the first byte.
        timeout = httpx.Timeout(None, connect=connect_timeout)
        headers = {"User-Agent": USER_AGENT, "Accept": "application/x-ndjson, application/json"}
        key = config.api_key()
        if key is not None:  # a server started with CORRAL_API_KEY wants it on every request
            headers["Authorization"] = f"Bearer {key}"
        # Go's client never proxies loopback; httpx would, if HTTP_PROXY is set and NO_PROXY is not.
        self._http = httpx.Client(
            base_url=host.url,
            timeout=timeout,
            headers=headers,
            trust_env=not is_local(host),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: Any = None, *, timeout: float | None = None) -> httpx.Response:
        kwargs: dict[str, Any] = {}
        if body is not None:
            kwargs["json"] = body
        if timeout is not None:
            kwargs["timeout"] = httpx.Timeout(timeout)
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from None
        if response.status_code >= 400:
            raise ClientError(_error_text(response, response.content), response.status_code)
        return response

    def _transport_error(self, exc: httpx.TransportError) -> ClientError:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return ConnectError(f"could not connect to corral server at {self.host.url}")
        if isinstance(exc, httpx.RemoteProtocolError):
            return ClientError(f"the corral server at {self.host.url} closed the connection")
        return ClientError(f"{type(exc).__name__.lower()}: {exc}" if str(exc) else type(exc).__name__)

    def _json(self, method: str, path: str, body: Any = None) -> Any:
        response = self._request(method, path, body)
        if not response.content.strip():
            return {}
        try:
            return response.json()
        except ValueError:
            raise ClientError(f"unexpected response from server: {response.text[:200]!r}") from None

    def stream(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """POST ``body`` and yield each NDJSON object; closing the iterator early closes the connection,
        which is how the server learns to stop generating."""
        try:
            with self._http.stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    raise ClientError(_error_text(response, response.read()), response.status_code)
                for line in response.iter_lines():
                    if not line.strip():
                        continue
                    try:
                        item = json.loads(line)
                    except ValueError:
                        raise ClientError(f"unexpected response from server: {line[:200]!r}") from None
                    if isinstance(item, dict) and item.get("error"):
                        raise ClientError(str(item["error"]), response.status_code)
                    if isinstance(item, dict):
                        yield item
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from None

    # -- endpoints --------------------------------------------------------------------------------------------

    def heartbeat(self, timeout: float = 2.0) -> bool:
        """``HEAD /``: whether a server answers at all (any HTTP status counts as an answer)."""
        try:
            self._http.head("/", timeout=httpx.Timeout(timeout))
        except httpx.TransportError:
            return False
        return True

    def version(self, timeout: float = 3.0) -> str:
        response = self._request("GET", "/api/version", timeout=timeout)
        try:
            data = response.json()
            # Corral reports the Ollama API level as "version" and its own release as "corral_version".
            return str(data.get("corral_version") or data.get("version", ""))
        except ValueError:
            return ""

    def list(self) -> dict[str, Any]:
        return dict(self._json("GET", "/api/tags"))

    def ps(self) -> dict[str, Any]:
        return dict(self._json("GET", "/api/ps"))

    def show(
        self,
        model: str,
        *,
        verbose: bool = False,
        system: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model}
        if verbose:
            body["verbose"] = True
        if system:
            body["system"] = system
        if options:
            body["options"] = options
        return dict(self._json("POST", "/api/show", body))

    def copy(self, source: str, destination: str) -> None:
        self._request("POST", "/api/copy", {"source": source, "destination": destination})

    def delete(self, model: str) -> None:
        self._request("DELETE", "/api/delete", {"model": model})

    def embed(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self._json("POST", "/api/embed", body))

    def chat(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        return self.stream("/api/chat", body)

    def generate(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        return self.stream("/api/generate", body)

    def pull(self, model: str, *, insecure: bool = False) -> Iterator[dict[str, Any]]:
        body: dict[str, Any] = {"model": model}
        if insecure:
            body["insecure"] = True
        return self.stream("/api/pull", body)

    def push(self, model: str, *, insecure: bool = False) -> Iterator[dict[str, Any]]:
        body: dict[str, Any] = {"model": model}
        if insecure:
            body["insecure"] = True
        return self.stream("/api/push", body)

    def create(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        return self.stream("/api/create", body)

    def blob_exists(self, digest: str) -> bool:
        try:
            self._request("HEAD", f"/api/blobs/{digest}")
        except ClientError as exc:
            if exc.reply_status == 404:
                return False
            raise
        return True

    def create_blob(self, digest: str, path: Path, on_bytes: Callable[[int], None] | None = None) -> None:
        """Upload a file as a blob unless the server already has it (``HEAD`` first, as Ollama's client does)."""
        if self.blob_exists(digest):
            if on_bytes is not None:
                on_bytes(path.stat().st_size)
            return
        with path.open("rb") as handle:
            content = _chunks(handle, on_bytes)
            # an explicit length instead of chunked encoding, which not every server accepts for uploads
            headers = {"Content-Length": str(path.stat().st_size), "Content-Type": "application/octet-stream"}
            try:
                response = self._http.post(f"/api/blobs/{digest}", content=content, headers=headers)
            except httpx.TransportError as exc:
                raise self._transport_error(exc) from None
        if response.status_code >= 400:
            raise ClientError(_error_text(response, response.content), response.status_code)


def _chunks(handle: BinaryIO, on_bytes: Callable[[int], None] | None, size: int = 1 << 20) -> Iterator[bytes]:
    while chunk := handle.read(size):
        if on_bytes is not None:
            on_bytes(len(chunk))
        yield chunk
