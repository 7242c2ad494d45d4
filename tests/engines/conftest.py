"""The native engine the engine tests run on: built once per session with ``corral engine build --rpc``.

The build (about ten minutes on two idle cores) goes to ``CORRAL_TEST_ENGINE_CACHE`` (default
``~/.cache/corral-test-engines``), so a machine that has built this llama.cpp version once reuses it.
``CORRAL_ENGINE`` pointing at a built engine with RPC is used as it is, with no build.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.engines import catalog

BUILD_TIMEOUT = 3600


def _usable(engine: catalog.Engine | None) -> bool:
    return engine is not None and engine.directory is not None and engine.rpc and engine.runs_here() is None


@pytest.fixture(scope="session")
def native_engine() -> Iterator[catalog.Engine]:
    """A ``cpu-native+rpc`` engine of the installed xllamacpp's llama.cpp."""
    given = os.environ.get("CORRAL_ENGINE", "").strip()
    if given and given != catalog.WHEEL:
        engine = catalog.resolve(given)
        if _usable(engine):
            assert engine is not None
            yield engine
            return
    cache = os.environ.get("CORRAL_TEST_ENGINE_CACHE")
    home = Path(cache) if cache else Path.home() / ".cache" / "corral-test-engines"
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CORRAL_", "OLLAMA_"))}
    env["CORRAL_HOME"] = str(home)
    name = f"{catalog.wheel_version()}-{catalog.variant_name(rpc=True)}"
    if not (home / "engines" / name / catalog.META).is_file():
        log = home / "test-engine-build.log"
        with open(log, "wb") as out:
            done = subprocess.run([sys.executable, "-m", "corral", "engine", "build", "--rpc"], env=env,
                                  stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  timeout=BUILD_TIMEOUT)
        assert done.returncode == 0, f"corral engine build --rpc failed:\n{log.read_text(errors='replace')[-3000:]}"
    engine = catalog.load(home / "engines" / name)
    assert engine.runs_here() is None
    yield engine
