"""Which engine serves: decided once per server process, the one place that decides it.

1. ``CORRAL_ENGINE=wheel|<name>|<variant>|<path>``: exactly that engine (an unusable one is an error at start).
2. ``CORRAL_LLAMA_SERVER=/path/to/llama-server``: that binary (the older setting, kept).
3. Otherwise the best engine built here that this machine can run: a GPU build when its GPU is present, then a
   native CPU build, all from the same llama.cpp as the installed wheel (a build left from an older wheel would
   behave differently, so it is passed over); with ``CORRAL_RPC_SERVERS`` only a build with RPC qualifies.
4. None of those: the ``xllamacpp`` wheel.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from corral import config
from corral.engines import catalog, gpu, rpc
from corral.engines.catalog import Engine
from corral.errors import EngineError

log = logging.getLogger("corral.engines")

_GPU_RANK = {"cuda": 0, "vulkan": 1}


@dataclass(frozen=True)
class Choice:
    engine: Engine | None  # None: the xllamacpp wheel
    reason: str

    @property
    def label(self) -> str:
        return catalog.WHEEL if self.engine is None else self.engine.label

    def describe(self) -> str:
        """The start-up line: which engine, from where, and why it was picked."""
        if self.engine is None:
            return f"engine: wheel (xllamacpp {catalog.wheel_version()}, {self.reason})"
        return f"engine: {self.engine.label} ({self.engine.server}, {self.reason})"


def choose() -> Choice:
    """Decide now, from the environment and the engines on disk."""
    raw = (os.environ.get("CORRAL_ENGINE") or "").strip()
    if raw:
        engine = catalog.resolve(raw)
        if engine is not None and (why := engine.runs_here()):
            raise EngineError(f"CORRAL_ENGINE={raw}: {engine.name} cannot run here: {why}")
        return Choice(engine, "CORRAL_ENGINE")
    binary = config.llama_server_binary()
    if binary:
        return Choice(catalog.external(Path(binary)), "CORRAL_LLAMA_SERVER")
    engine, skipped = best_installed()
    for name, why in skipped:
        log.info("engine %s not used: %s", name, why)
    if engine is not None:
        return Choice(engine, "the best engine built here")
    return Choice(None, "no engine built for this machine" if not skipped else "no built engine fits")


def best_installed(engines: list[Engine] | None = None) -> tuple[Engine | None, list[tuple[str, str]]]:
    """The best usable engine, and why each other one was passed over."""
    wanted_version = catalog.wheel_version()
    need_rpc = bool(rpc.servers())
    usable: list[Engine] = []
    skipped: list[tuple[str, str]] = []
    for engine in catalog.installed() if engines is None else engines:
        why = engine.runs_here()
        if why is None and wanted_version and engine.version != wanted_version:
            why = f"built from llama.cpp {engine.version or '?'}, the wheel runs {wanted_version}"
        if why is None and engine.gpu and not gpu.detect(engine.gpu):
            why = f"no {engine.gpu} device found"
        if why is None and need_rpc and not engine.rpc:
            why = "CORRAL_RPC_SERVERS is set and this build has no RPC backend"
        if why is None:
            usable.append(engine)
        else:
            skipped.append((engine.name, why))
    if not usable:
        return None, skipped
    # GPU builds first (CUDA before Vulkan), then newest; `installed()` already lists newest first and sort is stable
    usable.sort(key=lambda e: _GPU_RANK.get(e.gpu or "", len(_GPU_RANK)))
    return usable[0], skipped


_current: Choice | None = None


def current() -> Choice:
    """The engine this server runs models on, chosen at the first call (the server logs it at start)."""
    global _current
    if _current is None:
        _current = choose()
    return _current


def reset() -> None:
    """Forget the choice (tests that change the environment)."""
    global _current
    _current = None
