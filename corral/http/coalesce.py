"""A response's head sent in one write with its first body bytes.

uvicorn writes the status line and headers as soon as the app starts a response, and the body in a second write.
Each write to a loopback socket wakes the client; on a two-core machine where the engine's threads hold both cores
the first wake-up gets the client scheduled and the server preempted, so the first body bytes (the first token of a
stream) left ~1 ms after the head (an instrumented server, median of 25 short generations). Holding the head until
the next write sends both at once; if no write follows before the event loop's next turn (a response whose body is
not ready yet), the head goes out alone then, so no client ever waits longer for a head than one loop turn.
"""

from __future__ import annotations

import asyncio
from typing import Any


class HeadWithBody:
    """Stands in for a connection's transport during one response: the first write waits for the second."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._first = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._first:
            self._first = False
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
            return
        if self._held is not None:
            data, self._held = self._held + bytes(data), None
        self._transport.write(data)
        self._step_aside()

    def flush(self) -> None:
        """Send a held head now (the next loop turn came first, or the connection is about to close)."""
        if self._held is not None:
            held, self._held = self._held, None
            if not self._transport.is_closing():
                self._transport.write(held)
            self._step_aside()

    def _step_aside(self) -> None:
        """Once nothing is held, later writes (a stream's tokens) go straight to the transport, no Python frame
        of ours in between."""
        self.write = self._transport.write  # type: ignore[method-assign]

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
