"""Registry authentication: ``WWW-Authenticate`` challenges, bearer tokens and configured credentials.

A registry that wants credentials answers 401 with ``WWW-Authenticate: Bearer realm=...,service=...,scope=...``
(the Docker token protocol) or ``Basic realm=...``. For Bearer, a token is fetched from the realm and the request
is retried with ``Authorization: Bearer <token>``. The realm must be on the very host (and port) the request went
to: a hostile registry could otherwise name a realm elsewhere and harvest credentials or tokens (CVE-2025-51471).

Credentials come from ``CORRAL_REGISTRY_AUTH`` (inline JSON, or the path of a JSON file) or else from
``$CORRAL_HOME/registries.json``; see ``docs/registry.md`` for the format.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from corral import config
from corral.errors import RegistryError, Unauthorized

log = logging.getLogger("corral.registry")

MAX_TOKEN_RESPONSE = 1 << 20  # a token response is a few kilobytes; never read an unbounded body (CVE-2024-12886)
MAX_AUTH_FILE = 1 << 20

_PARAM_RE = re.compile(r'\s*([A-Za-z0-9_.\-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*(?:,|$)')


@dataclass(frozen=True)
class Challenge:
    """One parsed ``WWW-Authenticate`` challenge."""

    scheme: str  # "bearer" or "basic", lower case
    realm: str = ""
    service: str = ""
    scope: str = ""


def parse_challenge(header: str) -> Challenge | None:
    """The challenge in a ``WWW-Authenticate`` value; ``None`` when it names no scheme Corral speaks."""
    text = header.strip()
    scheme, _, rest = text.partition(" ")
    scheme = scheme.lower()
    if scheme not in ("bearer", "basic"):
        return None
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        match = _PARAM_RE.match(rest, pos)
        if match is None or match.end() == pos:
            break
        key, value = match.group(1).lower(), match.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params.setdefault(key, value)
        pos = match.end()
    return Challenge(scheme, params.get("realm", ""), params.get("service", ""), params.get("scope", ""))


@dataclass(frozen=True)
class Credentials:
    """What the user configured for one registry host: a username and password, or a ready-made token."""

    username: str = ""
    password: str = ""
    token: str = ""

    @property
    def has_basic(self) -> bool:
        return bool(self.username and self.password)

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


def _entry(value: Any) -> Credentials | None:
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("token"), str) and value["token"]:
        return Credentials(token=value["token"])
    user, password = value.get("username"), value.get("password")
    if isinstance(user, str) and isinstance(password, str) and user and password:
        return Credentials(user, password)
    auth = value.get("auth")  # Docker's config.json: base64("user:password")
    if isinstance(auth, str) and auth:
        try:
            decoded = base64.b64decode(auth, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, sep, password = decoded.partition(":")
        if sep and user and password:
            return Credentials(user, password)
    return None


def _auth_document() -> Any:
    """The configured credentials document, or ``None``; a broken one is logged and ignored, never fatal."""
    raw = os.environ.get("CORRAL_REGISTRY_AUTH", "").strip()
    if raw.startswith("{"):
        text, origin = raw, "CORRAL_REGISTRY_AUTH"
    else:
        path = Path(raw).expanduser() if raw else config.home() / "registries.json"
        origin = "CORRAL_REGISTRY_AUTH file" if raw else "registries.json"
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_AUTH_FILE + 1)
        except OSError:
            return None
        if len(data) > MAX_AUTH_FILE:
            log.warning("ignoring %s: larger than %d bytes", origin, MAX_AUTH_FILE)
            return None
        text = data.decode("utf-8", "replace")
    try:
        doc = json.loads(text)
    except ValueError:
        log.warning("ignoring %s: not valid JSON", origin)
        return None
    if isinstance(doc, dict) and isinstance(doc.get("auths"), dict):
        return doc["auths"]
    return doc if isinstance(doc, dict) else None


def credentials_for(host: str) -> Credentials:
    """Credentials configured for ``host`` (``name:port`` compared case-insensitively); empty when none."""
    doc = _auth_document()
    if not doc:
        return Credentials()
    wanted = host.lower()
    for key, value in doc.items():
        if isinstance(key, str) and _host_key(key) == wanted:
            return _entry(value) or Credentials()
    return Credentials()


def _host_key(key: str) -> str:
    """Accept ``host``, ``host:port`` or a URL (Docker writes ``https://index.docker.io/v1/``) as the key."""
    if "://" in key:
        return (urlsplit(key).netloc or key).lower()
    return key.rstrip("/").lower()


def _authority(url: httpx.URL | str) -> tuple[str, str]:
    """(scheme, host[:port]) with default ports left out, so ``https://h`` and ``https://h:443`` compare equal."""
    parsed = httpx.URL(str(url))
    host = parsed.host.lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    default = {"http": 80, "https": 443}.get(parsed.scheme)
    port = parsed.port
    return parsed.scheme, host if port is None or port == default else f"{host}:{port}"


def check_realm(realm: str, request_url: httpx.URL) -> httpx.URL:
    """The realm as a URL, refused unless it is http(s) on the request's own host and port (CVE-2025-51471).

    An https registry may not send the token request to plain http either.
    """
    try:
        url = httpx.URL(realm)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise RegistryError(f"invalid authentication realm {realm[:200]!r}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise RegistryError(f"invalid authentication realm {realm[:200]!r}")
    realm_scheme, realm_host = _authority(url)
    req_scheme, req_host = _authority(request_url)
    if realm_host != req_host:
        raise RegistryError(f"realm host {realm_host!r} does not match original host {req_host!r}")
    if req_scheme == "https" and realm_scheme != "https":
        raise RegistryError(f"realm {realm_host!r} downgrades https to http")
    return url


async def read_limited(response: httpx.Response, limit: int) -> bytes:
    """At most ``limit`` decoded bytes of a streamed response; more is an error (decompression bombs included)."""
    out = bytearray()
    async for chunk in response.aiter_bytes():
        out += chunk
        if len(out) > limit:
            raise RegistryError(f"registry response is larger than {limit} bytes")
    return bytes(out)


async def fetch_token(
    http: httpx.AsyncClient, challenge: Challenge, request_url: httpx.URL, creds: Credentials, user_agent: str
) -> str:
    """Ask the challenge's realm for a bearer token (with basic credentials when configured)."""
    realm = check_realm(challenge.realm, request_url)
    params: list[tuple[str, str]] = list(realm.params.multi_items())
    if challenge.service:
        params.append(("service", challenge.service))
    params.extend(("scope", scope) for scope in challenge.scope.split() if scope)
    headers = {"User-Agent": user_agent}
    if creds.has_basic:
        headers["Authorization"] = creds.basic_header()
    url = realm.copy_with(params=params)
    try:
        async with http.stream("GET", url, headers=headers) as response:
            body = await read_limited(response, MAX_TOKEN_RESPONSE)
    except httpx.HTTPError as exc:
        raise RegistryError(f"cannot reach the authentication realm {_authority(realm)[1]}: {exc}") from None
    if response.status_code in (401, 403):
        raise Unauthorized()
    if response.status_code >= 400:
        text = body.decode("utf-8", "replace").strip()[:500]
        raise RegistryError(f"authentication realm answered {response.status_code}: {text}")
    try:
        doc = json.loads(body)
    except ValueError:
        raise RegistryError("authentication realm sent a response that is not JSON") from None
    token = (doc.get("token") or doc.get("access_token")) if isinstance(doc, dict) else None
    if not isinstance(token, str) or not token or any(c in token for c in "\r\n"):
        raise RegistryError("authentication realm sent no token")
    return token
