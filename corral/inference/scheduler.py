"""Which runners are loaded, for how long, and who may use them.

One runner per model (keyed by its weights and adapters). A request leases a runner; when the last lease ends, the
keep-alive timer starts, and when it fires the runner is stopped. A request whose load options differ from the loaded
runner's waits until that runner is idle and then reloads it. At most ``MAX_LOADED_MODELS`` runners live at once: the
least recently used idle one is evicted to make room. Loads happen one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from corral import config
from corral.errors import RunnerError, ServerBusy
from corral.inference import memory
from corral.inference.launch import Launch, RunnerKey
from corral.inference.runner import kvcache
from corral.inference.runner.base import Runner
from corral.inference.runner.process import new_runner
from corral.inference.runner.spec import LaunchSpec
from corral.store.model import Model

log = logging.getLogger("corral.inference.scheduler")

FOREVER = float("inf")


@dataclass
class Loaded:
    """A live runner, the model it was loaded for, and its leases and keep-alive clock."""

    key: RunnerKey
    spec: LaunchSpec
    runner: Runner
    model: Model
    size: int  # bytes planned for it (weights and KV cache), counted against the memory budget
    refs: int = 0
    keep_alive: float = 300.0
    expires_at: float = FOREVER  # wall-clock seconds; FOREVER while in use or kept forever
    last_used: float = field(default_factory=time.monotonic)
    timer: asyncio.TimerHandle | None = None
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    slots: asyncio.Semaphore | None = None


class Scheduler:
    def __init__(self) -> None:
        self.loaded: dict[RunnerKey, Loaded] = {}
        self._load_lock = asyncio.Lock()
        self._pending = 0
        self._changed = asyncio.Condition()

    # -- leasing -----------------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lease(self, launch: Launch, model: Model, keep_alive: float | None,
                    ) -> AsyncIterator[tuple[Loaded, float]]:
        """Hold a loaded runner (and one slot) for one request; yields it with this request's load time in seconds.

        The keep-alive clock starts when the last holder lets go."""
        # Everything that waits, for a load or for a free slot, counts against MAX_QUEUE.
        if self._pending >= config.max_queue():
            raise ServerBusy()
        self._pending += 1
        try:
            entry, load_duration = await self._acquire(launch, model, keep_alive)
            assert entry.slots is not None
            try:
                await entry.slots.acquire()
            except BaseException:
                await self._release(entry)
                raise
        finally:
            self._pending -= 1
        try:
            yield entry, load_duration
        finally:
            entry.slots.release()
            await self._release(entry)

    async def _acquire(self, launch: Launch, model: Model, keep_alive: float | None) -> tuple[Loaded, float]:
        key, spec = launch.key, launch.spec
        started = time.monotonic()
        while True:
            entry = self.loaded.get(key)
            if entry is not None and entry.runner.alive() and entry.spec == spec:
                self._take(entry, keep_alive)
                # The runner holds weights; the definition (template, parameters, system) is the request's. A model
                # re-created on the same weights keeps its runner, and /api/ps names the definition last served.
                entry.model = model
                return entry, 0.0
            async with self._load_lock:
                entry = self.loaded.get(key)
                if entry is not None and entry.runner.alive() and entry.spec == spec:
                    continue
                if entry is not None:
                    if entry.refs > 0 and entry.runner.alive():
                        # Different load options: wait for the current users, then reload.
                        await self._wait_idle(entry)
                        continue
                    await self._unload(entry)
                await self._make_room(launch.size, model.display_name, rpc=bool(spec.rpc))
                entry = await self._load(launch, model)
                self._take(entry, keep_alive)
                return entry, time.monotonic() - started

    def _take(self, entry: Loaded, keep_alive: float | None) -> None:
        entry.refs += 1
        entry.idle.clear()
        entry.last_used = time.monotonic()
        if keep_alive is not None:
            entry.keep_alive = config.bounded_keep_alive(keep_alive) if keep_alive == keep_alive else -1.0
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        entry.expires_at = FOREVER

    async def _release(self, entry: Loaded) -> None:
        entry.refs -= 1
        entry.last_used = time.monotonic()
        if entry.refs > 0:
            return
        entry.idle.set()
        if not entry.runner.alive():
            await self._unload(entry)
            return
        self._arm_timer(entry)
        async with self._changed:
            self._changed.notify_all()

    def _arm_timer(self, entry: Loaded) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        if not 0 <= entry.keep_alive < config.KEEP_ALIVE_MAX:  # negative, NaN or beyond any timer: forever
            entry.expires_at = FOREVER
            return
        entry.expires_at = time.time() + entry.keep_alive
        loop = asyncio.get_running_loop()
        entry.timer = loop.call_later(max(entry.keep_alive, 0.0), lambda: asyncio.ensure_future(self._expire(entry)))

    async def _expire(self, entry: Loaded) -> None:
        if entry.refs == 0 and self.loaded.get(entry.key) is entry:
            log.info("keep_alive expired for %s; unloading", entry.model.display_name)
            await self._unload(entry)

    async def _wait_idle(self, entry: Loaded) -> None:
        await entry.idle.wait()

    # -- loading and eviction ------------------------------------------------------------------------------------

    async def _make_room(self, required: int, name: str, rpc: bool = False) -> None:
        """Evict least-recently-used idle runners until a new one fits: under MAX_LOADED_MODELS and in memory.

        A model that cannot fit even with nothing else loaded is refused with a clear error instead of being
        started into an out-of-memory kill. RPC workers serve one client at a time, so a runner that uses them
        (``rpc``) waits for the one holding them to be idle and evicts it."""
        limit = config.max_loaded_models()
        while True:
            loaded_bytes = sum(e.size for e in self.loaded.values())
            budget = memory.budget_bytes(loaded_bytes)
            if not self.loaded and required > budget:
                raise RunnerError(
                    f"model requires more system memory ({memory.human(required)}) than is available "
                    f"({memory.human(budget)})"
                )
            holder = next((e for e in self.loaded.values() if e.spec.rpc), None) if rpc else None
            if holder is None and len(self.loaded) < limit and loaded_bytes + required <= budget:
                return
            idle = [e for e in self.loaded.values() if e.refs == 0 and (holder is None or e is holder)]
            if idle:
                victim = min(idle, key=lambda e: e.last_used)
                log.info("evicting %s to make room for %s", victim.model.display_name, name)
                await self._unload(victim)
                continue
            async with self._changed:
                await self._changed.wait()

    async def _load(self, launch: Launch, model: Model) -> Loaded:
        spec = launch.spec
        runner = new_runner(spec)
        log.info("loading %s (num_ctx=%d, parallel=%d)", model.display_name, spec.num_ctx, spec.parallel)
        await runner.start(timeout=config.load_timeout())
        try:
            if spec.slot_save_path and runner.client is not None:
                await kvcache.restore(runner.client, Path(spec.slot_save_path), spec.parallel)
        except BaseException:  # cancelled (its client left) before it was registered: nobody else would stop it
            await asyncio.shield(runner.stop())
            raise
        entry = Loaded(key=launch.key, spec=spec, runner=runner, model=model, size=launch.size)
        entry.slots = asyncio.Semaphore(spec.parallel)
        entry.keep_alive = config.keep_alive_default()
        self.loaded[launch.key] = entry
        return entry

    async def _unload(self, entry: Loaded) -> None:
        if self.loaded.get(entry.key) is entry:
            del self.loaded[entry.key]
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        if entry.spec.slot_save_path and entry.runner.alive() and entry.runner.client is not None:
            await kvcache.save(entry.runner.client, Path(entry.spec.slot_save_path))
        await entry.runner.stop()
        async with self._changed:
            self._changed.notify_all()

    # -- control ---------------------------------------------------------------------------------------------------

    async def expire_now(self, key: RunnerKey) -> bool:
        """``keep_alive: 0`` with no prompt: unload as soon as the current users are done."""
        entry = self.loaded.get(key)
        if entry is None:
            return False
        entry.keep_alive = 0.0
        if entry.refs == 0:
            await self._unload(entry)
        return True

    @property
    def pending(self) -> int:
        """Requests waiting for a load or a free slot (what MAX_QUEUE bounds)."""
        return self._pending

    def running(self) -> list[Loaded]:
        return sorted(self.loaded.values(), key=lambda e: e.expires_at, reverse=True)

    async def shutdown(self) -> None:
        await asyncio.gather(*(self._unload(e) for e in list(self.loaded.values())), return_exceptions=True)
