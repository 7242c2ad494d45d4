"""An HTTP client for one registry repository, speaking the OCI distribution (Docker registry v2) protocol.

It adds to httpx what every registry call needs: the auth dance (a 401 challenge, a token from the realm, one retry),
redirects followed by hand so credentials never leave the registry's own origin, bounded retries with backoff on
5xx answers and dropped connections, bounded reads of every body it keeps, and errors worded as Ollama words them
(``file does not exist`` for 404, ``<code>: <body>`` otherwise).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import platform
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx

from corral import __version__
from corral.errors import RegistryError, RegistryNotFound, RegistryStatusError, RegistryUnreachable, Unauthorized
from corral.registry import hf
from corral.registry.auth import Credentials, credentials_for, fetch_token, parse_challenge, read_limited
from corral.registry.endpoint import Endpoint
from corral.registry.options import DEFAULT_OPTIONS, TransferOptions
from corral.store.manifest import MEDIA_MANIFEST
from corral.store.names import DEFAULT_HOST
from corral.store.store import MAX_MANIFEST_BYTES

log = logging.getLogger("corral.registry")

USER_AGENT = (
    f"corral/{__version__} ({platform.machine()} {platform.system().lower()}) Python/{platform.python_version()}"
)
MAX_ERROR_BODY = 64 << 10  # read this much of an error body at most
SHOWN_ERROR_BODY = 500  # and show this much of it
MAX_REDIRECTS = 10
_REDIRECTS = (301, 302, 303, 307, 308)

Body = Callable[[], bytes | AsyncIterator[bytes]] | None


def origin(url: httpx.URL) -> tuple[str, str, int | None]:
    """Scheme, host and effective port: credentials go only where all three match the registry's."""
    port = url.port or {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host.lower(), port


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def describe(exc: BaseException) -> str:
    """A transport error in a few words: the operating system's reason when there is one underneath httpx's
    (``connection refused`` says more than ``All connection attempts failed``)."""
    if isinstance(exc, httpx.TimeoutException):
        text = str(exc).strip()
        return f"timed out ({text})" if text else "timed out"
    cause: BaseException | None = exc
    for _ in range(10):
        if cause is None:
            break
        if isinstance(cause, socket.gaierror):
            return f"cannot resolve the host name ({cause.strerror})"
        if isinstance(cause, OSError) and cause.errno and cause.errno > 0:
            return os.strerror(cause.errno).lower()
        cause = cause.__cause__ or cause.__context__
    return str(exc).strip() or type(exc).__name__


def unreachable_hint(endpoint: Endpoint, exc: BaseException) -> str:
    """What to do when a registry cannot be reached. A name that does not resolve, or Ollama's own registry out of
    reach, most likely means no internet: a local registry or an archive still works. Another registry that refuses
    the connection is probably not running where the name says."""
    cause: BaseException | None = exc
    resolve_failed = False
    for _ in range(10):
        if cause is None:
            break
        if isinstance(cause, socket.gaierror):
            resolve_failed = True
            break
        cause = cause.__cause__ or cause.__context__
    if resolve_failed or endpoint.name.host.lower() == DEFAULT_HOST:
        return " (offline? pull from a local registry, or add a model with `corral import` or `corral create`)"
    return f" (is a registry running at {endpoint.authority}?)"


async def read_prefix(response: httpx.Response, limit: int) -> bytes:
    """Up to ``limit`` bytes of a body, ignoring the rest (for error messages)."""
    out = bytearray()
    try:
        async for chunk in response.aiter_bytes():
            out += chunk
            if len(out) >= limit:
                break
    except httpx.HTTPError:
        pass
    return bytes(out[:limit])


class RegistryClient:
    """Requests to one repository of one registry, carrying the auth state from call to call."""

    def __init__(self, endpoint: Endpoint, options: TransferOptions = DEFAULT_OPTIONS, *, token: str = "") -> None:
        self.endpoint = endpoint
        self.options = options
        self._base = httpx.URL(endpoint.base_url)
        self._creds: Credentials = credentials_for(endpoint.name.host)
        self.token = token or self._creds.token
        self._basic = False
        timeout = httpx.Timeout(connect=options.connect_timeout, read=options.stall_timeout, write=60.0, pool=None)
        # Go never proxies loopback; httpx would if HTTP_PROXY is set without NO_PROXY.
        self._http = httpx.AsyncClient(
            follow_redirects=False,
            trust_env=not _is_loopback(self._base.host),
            timeout=timeout,
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- plumbing ---------------------------------------------------------------------------------------------

    def same_origin(self, url: httpx.URL) -> bool:
        return origin(url) == origin(self._base)

    def _auth(self, url: httpx.URL) -> dict[str, str]:
        if not self.same_origin(url):
            return {}
        if self.token:
            return {"Authorization": f"Bearer {self.token}"}
        if self._basic:
            return {"Authorization": self._creds.basic_header()}
        return {}

    async def _send(
        self, method: str, url: httpx.URL, headers: dict[str, str], body: Body, stop_cross_origin: bool
    ) -> tuple[httpx.Response, httpx.URL]:
        """One request, following redirects by hand; with ``stop_cross_origin`` the first redirect off the
        registry's origin is returned (closed) instead of followed, so the caller learns the CDN URL."""
        for _ in range(MAX_REDIRECTS + 1):
            request = self._http.build_request(
                method, url, headers={**headers, **self._auth(url)}, content=body() if body is not None else None
            )
            response = await self._http.send(request, stream=True)
            location = response.headers.get("location")
            if response.status_code not in _REDIRECTS or not location:
                return response, url
            await response.aclose()
            target = url.join(location)
            if target.scheme not in ("http", "https"):
                raise RegistryError(f"registry redirected to an unsupported URL scheme {target.scheme!r}")
            if stop_cross_origin and not self.same_origin(target):
                return response, target
            if response.status_code == 303 or (response.status_code in (301, 302) and method == "POST"):
                method, body = "GET", None
            url = target
        raise RegistryError(f"too many redirects (more than {MAX_REDIRECTS})")

    async def _authed(
        self, method: str, url: httpx.URL, headers: dict[str, str], body: Body, stop_cross_origin: bool
    ) -> tuple[httpx.Response, httpx.URL]:
        """:meth:`_send`, and on a 401 from the registry: fetch a token (or switch to basic credentials), retry once."""
        for attempt in range(2):
            response, final = await self._send(method, url, headers, body, stop_cross_origin)
            if response.status_code != 401:
                return response, final
            header = response.headers.get("www-authenticate", "")
            await response.aclose()
            challenge = parse_challenge(header)
            if attempt == 1 or challenge is None or not self.same_origin(final):
                break
            if challenge.scheme == "bearer":  # fetch_token refuses a realm off this host (CVE-2025-51471)
                self.token = await fetch_token(self._http, challenge, final, self._creds, USER_AGENT)
            elif self._creds.has_basic and not self._basic:
                self._basic = True
            else:
                break
        raise Unauthorized("unauthorized: access denied" + hf.hint(self.endpoint.name, 401))

    async def open(
        self,
        method: str,
        url: httpx.URL,
        *,
        headers: dict[str, str] | None = None,
        body: Body = None,
        retry: bool = True,
        stop_cross_origin: bool = False,
    ) -> tuple[httpx.Response, httpx.URL]:
        """A streamed response (the caller closes it), after auth, redirects and, with ``retry``, bounded retries
        on 5xx answers and dropped connections. Any status comes back; only transport failures raise."""
        attempts = max(1, self.options.api_attempts if retry else 1)
        for attempt in range(1, attempts + 1):
            try:
                response, final = await self._authed(method, url, headers or {}, body, stop_cross_origin)
            except httpx.TransportError as exc:
                if attempt < attempts:
                    log.info("%s %s failed (%s); retrying", method, url, describe(exc))
                    await asyncio.sleep(self.options.backoff(attempt, self.options.api_retry_base))
                    continue
                raise RegistryUnreachable(f"cannot reach registry {self.endpoint.authority}: {describe(exc)}"
                                          f"{unreachable_hint(self.endpoint, exc)}") from None
            if response.status_code >= 500 and attempt < attempts:
                await response.aclose()
                log.info("%s %s answered %d; retrying", method, url, response.status_code)
                await asyncio.sleep(self.options.backoff(attempt, self.options.api_retry_base))
                continue
            return response, final
        raise AssertionError("unreachable")  # pragma: no cover

    async def raise_for_status(self, response: httpx.Response) -> None:
        """Ollama's wording for an error answer: 404 is ``file does not exist``, others ``<code>: <body>``."""
        if response.status_code == 404:
            raise RegistryNotFound()
        if response.status_code >= 400:
            text = (await read_prefix(response, MAX_ERROR_BODY)).decode("utf-8", "replace").strip()
            if len(text) > SHOWN_ERROR_BODY:
                text = text[:SHOWN_ERROR_BODY] + "..."
            raise RegistryStatusError(response.status_code, text + hf.hint(self.endpoint.name, response.status_code))

    async def call(
        self,
        method: str,
        url: httpx.URL,
        *,
        headers: dict[str, str] | None = None,
        body: Body = None,
        limit: int = MAX_ERROR_BODY,
        retry: bool = True,
    ) -> tuple[httpx.Response, bytes, httpx.URL]:
        """A whole request: the response, its body (at most ``limit`` bytes) and the URL that answered."""
        response, final = await self.open(method, url, headers=headers, body=body, retry=retry)
        try:
            await self.raise_for_status(response)
            data = b"" if method == "HEAD" else await read_limited(response, limit)
        except httpx.TransportError as exc:
            raise RegistryUnreachable(f"registry {self.endpoint.authority} dropped the connection: "
                                      f"{describe(exc)}") from None
        finally:
            await response.aclose()
        return response, data, final

    # -- the protocol -------------------------------------------------------------------------------------------

    async def get_manifest(self) -> bytes:
        """``GET /v2/<repo>/manifests/<tag>``: the raw bytes, at most 4 MiB."""
        url = self.endpoint.url("manifests", self.endpoint.name.tag)
        _, data, _ = await self.call("GET", url, headers={"Accept": MEDIA_MANIFEST}, limit=MAX_MANIFEST_BYTES)
        return data

    async def put_manifest(self, raw: bytes, media_type: str) -> None:
        url = self.endpoint.url("manifests", self.endpoint.name.tag)
        await self.call("PUT", url, headers={"Content-Type": media_type or MEDIA_MANIFEST}, body=lambda: raw)

    async def blob_exists(self, digest: str) -> bool:
        """``HEAD /v2/<repo>/blobs/<digest>``."""
        try:
            await self.call("HEAD", self.endpoint.url("blobs", digest))
        except RegistryNotFound:
            return False
        return True

    async def blob_location(self, digest: str, size: int) -> tuple[httpx.URL, int | None]:
        """Where the blob's bytes are served (the registry, or the first off-origin redirect: a CDN), and the size
        the server reports, learnt from a one-byte ranged GET so nothing large is transferred."""
        url = self.endpoint.url("blobs", digest)
        response, final = await self.open("GET", url, headers={"Range": "bytes=0-0"} if size else {},
                                          stop_cross_origin=True)
        try:
            if response.status_code in _REDIRECTS:
                return final, None
            await self.raise_for_status(response)
            return final, _reported_size(response)
        finally:
            await response.aclose()

    @asynccontextmanager
    async def open_range(self, url: httpx.URL, start: int, end: int) -> AsyncIterator[httpx.Response]:
        """``GET`` bytes ``start..end`` (inclusive) of a blob. Transport errors come through as httpx's own, with
        no retries here: the part loop tells stalls from failures and resumes from the bytes it has."""
        response, _ = await self._authed("GET", url, {"Range": f"bytes={start}-{end}"}, None, False)
        try:
            await self.raise_for_status(response)
            yield response
        finally:
            await response.aclose()

    async def start_upload(self, digest: str, mount_from: str | None) -> httpx.URL | None:
        """``POST /v2/<repo>/blobs/uploads/``; ``None`` when the registry mounted the blob from ``mount_from``."""
        url = self.endpoint.url("blobs", "uploads/")
        if mount_from:
            url = url.copy_merge_params({"mount": digest, "from": mount_from})
        response, _, final = await self.call("POST", url, headers={"Content-Length": "0"})
        if response.status_code == 201 and mount_from:
            return None
        location = response.headers.get("docker-upload-location") or response.headers.get("location")
        if response.status_code != 202 or not location:
            raise RegistryError(f"registry did not start an upload ({response.status_code})")
        return final.join(location)

    async def send_upload(self, method: str, url: httpx.URL, headers: dict[str, str], body: Body) -> httpx.Response:
        """A ``PATCH`` or ``PUT`` of upload data; not retried here (the upload restarts as a whole)."""
        response, _, _ = await self.call(method, url, headers=headers, body=body, retry=False)
        return response


def _reported_size(response: httpx.Response) -> int | None:
    """The blob's full size from ``Content-Range: bytes 0-0/N`` (206) or ``Content-Length`` (200)."""
    if response.status_code == 206:
        _, _, total = response.headers.get("content-range", "").partition("/")
        return int(total) if total.strip().isdigit() else None
    length = response.headers.get("content-length", "")
    return int(length) if response.status_code == 200 and length.isdigit() else None


def with_query(url: httpx.URL, **params: Any) -> httpx.URL:
    """``url`` with extra query parameters, keeping those the registry put there (upload state tokens)."""
    return url.copy_merge_params(params)
