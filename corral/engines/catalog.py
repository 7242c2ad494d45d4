"""The engines on disk: each build is a directory ``CORRAL_HOME/engines/<llama.cpp version>-<variant>/``.

::

    $CORRAL_HOME/engines/2026.10.11549-cpu-native+rpc/
        engine.json          what it was built from and with (written last: a directory without it is no engine)
        bin/llama-server     the engine a runner starts
        bin/ggml-rpc-server  the RPC worker (builds with +rpc)
        bin/llama-bench      llama.cpp's own benchmark (the benchmarks' anchor)

The version is the pinned ``xllamacpp``'s, whose sdist the source comes from, so an engine and the wheel run the
same llama.cpp. A variant names the backends: ``cpu-native`` (the CPU backend compiled for this machine's
instruction set), ``cuda``, ``vulkan``, each with ``+rpc`` when the build has the RPC backend.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral import config
from corral.errors import EngineError

SERVER = "llama-server"
RPC_SERVER = "ggml-rpc-server"  # named rpc-server in older llama.cpp; this version's target is ggml-rpc-server
BENCH = "llama-bench"
META = "engine.json"
WHEEL = "wheel"  # CORRAL_ENGINE's name for the xllamacpp wheel

# The CPU flags that decide whether code built with -march=native runs here: instruction-set extensions only, so a
# flag that says nothing about instructions (hypervisor, a vulnerability mitigation) cannot disqualify a build.
_ISA_FLAG = re.compile(r"^(avx|sse|ssse|fma|f16c|bmi|amx|popcnt|gfni|vaes|vpclmulqdq|pclmulqdq|movbe|abm|adx|sha_ni|"
                       r"asimd|sve|i8mm|dotprod|fphp|bf16|sme)")


def engines_dir() -> Path:
    return config.home() / "engines"


def wheel_version() -> str:
    """The installed ``xllamacpp``'s version: the llama.cpp a fresh build compiles and the wheel runs."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("xllamacpp")
    except PackageNotFoundError:
        return ""


def variant_name(*, native: bool = True, cuda: bool = False, vulkan: bool = False, rpc: bool = False) -> str:
    """``cpu-native``, ``cuda``, ``vulkan`` (the CPU part of a GPU build is native too), ``cuda+vulkan``; then
    ``+rpc``."""
    parts = [p for p, on in (("cuda", cuda), ("vulkan", vulkan)) if on] or ["cpu-native" if native else "cpu"]
    if rpc:
        parts.append("rpc")
    return "+".join(parts)


def cpu_flags() -> frozenset[str]:
    """This CPU's instruction-set flags, from /proc/cpuinfo (x86 ``flags``, Arm ``Features``)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(f for f in value.split() if _ISA_FLAG.match(f))
    return frozenset()


@dataclass(frozen=True)
class Engine:
    """One engine: a directory built by ``corral engine build``, or an external ``llama-server`` binary."""

    name: str
    server: Path
    variant: str = "external"
    version: str = ""  # the xllamacpp version whose llama.cpp it was built from ("" for an external binary)
    backends: tuple[str, ...] = ("cpu",)
    rpc: bool = False
    native: bool = False
    built_cpu_flags: frozenset[str] = frozenset()
    built: str = ""  # ISO 8601, UTC
    directory: Path | None = None  # None for an external binary
    meta: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def label(self) -> str:
        """What ``/api/ps`` and the start-up line call it: the variant (``cpu-native+rpc``)."""
        return self.variant

    @property
    def gpu(self) -> str | None:
        """The GPU backend it was built with (``cuda``, ``vulkan``), if any."""
        return next((b for b in self.backends if b != "cpu"), None)

    def tool(self, name: str) -> Path | None:
        """Another binary of the same build (``ggml-rpc-server``, ``llama-bench``), if it has one."""
        for candidate in (self.server.parent / name, *([self.server.parent / "rpc-server"] if name == RPC_SERVER
                                                       else [])):
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
        return None

    def runs_here(self) -> str | None:
        """None when this machine can run it, else why not (a native build made for a CPU with more extensions)."""
        if not (self.server.is_file() and os.access(self.server, os.X_OK)):
            return f"{self.server} is missing or not executable"
        if self.native and self.built_cpu_flags:
            missing = sorted(self.built_cpu_flags - cpu_flags())
            if missing:
                return f"built for a CPU with {', '.join(missing[:4])}, which this one lacks"
        return None


def load(directory: Path) -> Engine:
    """The engine built into ``directory`` (its ``engine.json``)."""
    try:
        meta = json.loads((directory / META).read_text())
    except (OSError, ValueError) as exc:
        raise EngineError(f"{directory} is not an engine built by corral: {exc}") from None
    if not isinstance(meta, dict):
        raise EngineError(f"{directory / META} is not a JSON object")
    return Engine(
        name=directory.name,
        server=directory / "bin" / SERVER,
        variant=str(meta.get("variant") or "external"),
        version=str(meta.get("version") or ""),
        backends=tuple(str(b) for b in meta.get("backends") or ("cpu",)),
        rpc=bool(meta.get("rpc")),
        native=bool(meta.get("native")),
        built_cpu_flags=frozenset(str(f) for f in meta.get("cpu_flags") or ()),
        built=str(meta.get("built") or ""),
        directory=directory,
        meta=meta,
    )


def installed() -> list[Engine]:
    """Every engine under ``CORRAL_HOME/engines/``, newest build first (dot-directories are builds in progress)."""
    root = engines_dir()
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return []
    out = []
    for entry in entries:
        if entry.name.startswith(".") or not (entry / META).is_file():
            continue
        try:
            out.append(load(entry))
        except EngineError:
            continue
    return sorted(out, key=lambda e: e.built, reverse=True)


def external(binary: Path) -> Engine:
    """A ``llama-server`` binary built elsewhere (``CORRAL_LLAMA_SERVER`` or a path in ``CORRAL_ENGINE``).

    Whether it has RPC is not known without running it, so it is assumed: ``--rpc`` is only passed when
    ``CORRAL_RPC_SERVERS`` asks for it, and a binary without the backend then fails to load with its own reason."""
    return Engine(name=str(binary), server=binary, variant="external", rpc=True)


def resolve(spec: str) -> Engine | None:
    """``CORRAL_ENGINE``'s value as an engine: ``wheel`` (None), a path (an engine directory, a directory holding
    ``llama-server``, or the binary itself), or the name or variant of a built engine."""
    spec = spec.strip()
    if spec.lower() == WHEEL:
        return None
    path = Path(spec).expanduser()
    if os.sep in spec or path.exists():
        if (path / META).is_file():
            return load(path)
        for candidate in (path / "bin" / SERVER, path / SERVER, path):
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return external(candidate.resolve())
        raise EngineError(f"CORRAL_ENGINE={spec}: no llama-server there")
    engines = installed()
    by_name = [e for e in engines if e.name == spec]
    if by_name:
        return by_name[0]
    by_variant = [e for e in engines if e.variant == spec]
    same_version = [e for e in by_variant if e.version == wheel_version()]
    if same_version or by_variant:
        return (same_version or by_variant)[0]
    known = ", ".join(e.name for e in engines) or "none built yet"
    raise EngineError(f"CORRAL_ENGINE={spec}: no such engine (built: {known}; 'corral engine build' makes one)")
