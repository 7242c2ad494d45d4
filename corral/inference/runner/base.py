"""The runner contract: what the scheduler and the service need of a process that hosts an engine on one model.

As Ollama's ``LlamaServer`` interface lets its scheduler drive any runner, this protocol is all the rest of Corral
knows of a runner; the engine behind it (the ``xllamacpp`` wheel in a child process, or a ``llama-server`` binary)
is chosen in one place, :func:`corral.inference.runner.process.new_runner`. Every engine speaks llama-server's HTTP
API, so one :class:`~corral.inference.runner.client.RunnerClient` talks to all of them.
"""

from __future__ import annotations

from typing import Protocol

from corral.inference.runner.client import RunnerClient
from corral.inference.runner.placement import Placement
from corral.inference.runner.spec import LaunchSpec


class Runner(Protocol):
    spec: LaunchSpec
    engine: str  # which engine runs the model, as /api/ps names it: "wheel", "cpu-native+rpc", ...
    placement: Placement  # where the engine put the model: bytes per device, RPC workers, GPU layers

    @property
    def client(self) -> RunnerClient | None:
        """The engine's HTTP client, once :meth:`start` has returned."""

    @property
    def pid(self) -> int | None: ...

    def alive(self) -> bool: ...

    def exit_message(self) -> str:
        """Why the engine stopped, for the API client: its exit status and its last meaningful log line."""

    async def start(self, timeout: float) -> None:
        """Start the engine and wait until it serves; raises :class:`~corral.errors.RunnerError` with the engine's
        own reason when it cannot load the model."""

    async def stop(self) -> None:
        """Stop the engine and release what it held (its socket directory); never raises."""
