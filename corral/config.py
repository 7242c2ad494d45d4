"""Configuration from the environment.

Every setting is read as ``CORRAL_<NAME>`` first and then under Ollama's name ``OLLAMA_<NAME>``, so existing
deployments (compose files, systemd units) keep working. Values are read fresh on each call so tests can set them.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_PORT = 11434


def env(name: str) -> str | None:
    """``CORRAL_<name>`` wins over ``OLLAMA_<name>``; surrounding quotes and spaces are stripped, as Ollama does."""
    for prefix in ("CORRAL_", "OLLAMA_"):
        raw = os.environ.get(prefix + name)
        if raw is not None:
            value = raw.strip().strip("\"'").strip()
            if value:
                return value
    return None


def env_bool(name: str, default: bool = False) -> bool:
    """Go's ParseBool semantics, except that an unparsable non-empty value counts as true (Ollama's rule)."""
    value = env(name)
    if value is None:
        return default
    return value.lower() not in ("0", "f", "false")


def env_int(name: str, default: int) -> int:
    value = env(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        return default


def home() -> Path:
    """Corral's own state (logs, KV cache, server key); the model store lives below it by default."""
    value = env("HOME")
    return Path(value).expanduser() if value else Path.home() / ".corral"


def models_dir() -> Path:
    value = env("MODELS")
    return Path(value).expanduser() if value else home() / "models"


@dataclass(frozen=True)
class HostPort:
    scheme: str
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        return self.host in ("127.0.0.1", "localhost", "::1") or self.host.startswith("127.")


def parse_host(value: str | None) -> HostPort:
    """Parse ``OLLAMA_HOST``-style values: ``host``, ``host:port``, ``scheme://host:port``, ``:port``.

    A missing port is 11434, or 80/443 when a scheme was given explicitly (Ollama's rule).
    """
    if not value:
        return HostPort("http", "127.0.0.1", DEFAULT_PORT)
    explicit_scheme = "://" in value
    parts = urlsplit(value if explicit_scheme else "http://" + value)
    scheme = parts.scheme or "http"
    host = parts.hostname or "127.0.0.1"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = (443 if scheme == "https" else 80) if explicit_scheme else DEFAULT_PORT
    if host == "0.0.0.0" or host == "::":
        pass
    return HostPort(scheme, host, port)


def host() -> HostPort:
    return parse_host(env("HOST"))


_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_go_duration(text: str) -> float:
    """Parse a Go ``time.ParseDuration`` string into seconds; raises ValueError like Go does on bad input."""
    s = text.strip()
    if not s:
        raise ValueError(f'time: invalid duration "{text}"')
    sign = 1.0
    if s[0] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(s):
        m = _DURATION_RE.match(s, pos)
        if not m:
            raise ValueError(f'time: invalid duration "{text}"')
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    return sign * total


KEEP_ALIVE_MAX = 1e9
"""Seconds (about 31 years): a longer keep-alive means "forever", so every timer the scheduler arms is finite."""


def bounded_keep_alive(seconds: float) -> float:
    """A keep-alive in seconds the scheduler can arm: negative or beyond ``KEEP_ALIVE_MAX`` (infinity included) is
    forever (-1). NaN is no duration at all: ValueError."""
    if math.isnan(seconds):
        raise ValueError("invalid keep_alive: not a number")
    if seconds < 0 or seconds >= KEEP_ALIVE_MAX:
        return -1.0
    return float(seconds)


def keep_alive_default() -> float:
    """Seconds; negative means forever. ``OLLAMA_KEEP_ALIVE`` accepts a bare integer as seconds."""
    value = env("KEEP_ALIVE")
    if value is None:
        return 300.0
    try:
        return bounded_keep_alive(float(int(value)))
    except ValueError:
        pass
    try:
        return bounded_keep_alive(parse_go_duration(value))
    except ValueError:
        return 300.0


def context_length_default() -> int:
    return env_int("CONTEXT_LENGTH", 0) or 4096


def num_parallel() -> int:
    """0 means: choose (Corral picks up to 4 slots where memory allows)."""
    return env_int("NUM_PARALLEL", 0)


def max_loaded_models() -> int:
    return env_int("MAX_LOADED_MODELS", 0) or 3


def max_queue() -> int:
    return env_int("MAX_QUEUE", 512)


def load_timeout() -> float:
    value = env("LOAD_TIMEOUT")
    if value is None:
        return 300.0
    try:
        seconds = float(int(value))
    except ValueError:
        try:
            seconds = parse_go_duration(value)
        except ValueError:
            return 300.0
    return seconds if seconds > 0 else float("inf")


def noprune() -> bool:
    return env_bool("NOPRUNE")


def debug() -> bool:
    return env_bool("DEBUG")


def llama_server_binary() -> str | None:
    """An external ``llama-server`` binary to run instead of the wheel's engine (same HTTP protocol)."""
    return os.environ.get("CORRAL_LLAMA_SERVER") or None


def num_threads() -> int:
    return env_int("NUM_THREADS", 0) or max(1, os.cpu_count() or 1)


def speculative() -> str | None:
    """``CORRAL_SPECULATIVE``: the engine's draftless n-gram speculative decoding (``ngram`` or a method name);
    Ollama has no such setting, so only the Corral name is read. See :mod:`corral.inference.speculative`."""
    return _corral_only("SPECULATIVE")


def _corral_only(name: str) -> str | None:
    """``CORRAL_<name>`` alone, stripped like :func:`env`: for settings whose ``OLLAMA_`` name means another thing."""
    raw = os.environ.get("CORRAL_" + name)
    value = raw.strip().strip("\"'").strip() if raw else ""
    return value or None


def api_key() -> str | None:
    """The key every request but ``GET``/``HEAD /`` must carry when set. Only ``CORRAL_API_KEY``: Ollama's
    ``OLLAMA_API_KEY`` is a client credential for ollama.com, and must neither lock a server nor be sent to one."""
    return _corral_only("API_KEY")


def require_auth() -> bool:
    """``CORRAL_REQUIRE_AUTH``: refuse to serve on a non-loopback address without ``CORRAL_API_KEY``."""
    value = _corral_only("REQUIRE_AUTH")
    return value is not None and value.lower() not in ("0", "f", "false")
