"""Where a model name is pulled from or pushed to: ``scheme://host/v2/<namespace>/<model>/...``.

``insecure`` switches the scheme to http (as in Ollama it does not mean "skip TLS verification"); a name spelled
``http://...`` without it is refused. ``CORRAL_REGISTRY_MIRRORS`` (``host=URL`` pairs, comma separated) sends the
requests for a name's host to another base URL while the name, and so the store path, stays the same; the tests
use it to point ``hf.co`` names at a registry on 127.0.0.1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import quote

import httpx

from corral.errors import RegistryError
from corral.store.names import ModelName, parse_name, split_scheme


@dataclass(frozen=True)
class Endpoint:
    """A model name together with the registry base URL its transfers use."""

    name: ModelName
    base_url: str  # scheme://authority[/prefix], no trailing slash

    @property
    def authority(self) -> str:
        """``host[:port]`` of the registry actually contacted, for messages."""
        return httpx.URL(self.base_url).netloc.decode("ascii")

    def url(self, kind: str, reference: str = "") -> httpx.URL:
        """``<base>/v2/<ns>/<model>/<kind>/<reference>``; ``reference`` is a tag or a validated digest."""
        path = f"/v2/{quote(self.name.namespace)}/{quote(self.name.model)}/{kind}/"
        return httpx.URL(self.base_url + path + quote(reference, safe=":/"))


def mirrors() -> dict[str, str]:
    """``CORRAL_REGISTRY_MIRRORS`` as ``{host: base URL}``; malformed pairs are refused loudly, not ignored."""
    raw = os.environ.get("CORRAL_REGISTRY_MIRRORS", "")
    out: dict[str, str] = {}
    for item in raw.replace(";", ",").split(","):
        item = item.strip()
        if not item:
            continue
        host, sep, url = item.partition("=")
        try:
            parsed = httpx.URL(url.strip()) if sep else None
        except httpx.InvalidURL:
            parsed = None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host or not host.strip():
            raise RegistryError(f"CORRAL_REGISTRY_MIRRORS: expected host=http(s)://address, got {item!r}")
        out[host.strip().lower()] = str(parsed).rstrip("/")
    return out


def resolve(text: str, insecure: bool = False) -> Endpoint:
    """Parse a model name (raising ``InvalidModelName``) and decide the base URL of its registry."""
    scheme, _rest = split_scheme(text)
    name = parse_name(text)
    if scheme not in (None, "http", "https"):
        raise RegistryError(f"unsupported protocol {scheme}")
    if scheme == "http" and not insecure:
        raise RegistryError("insecure protocol http")
    mirror = mirrors().get(name.host.lower())
    if mirror is not None:
        return Endpoint(name, mirror)
    use = "http" if insecure or scheme == "http" else "https"
    return Endpoint(name, f"{use}://{name.host}")
