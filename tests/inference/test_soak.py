"""A bounded soak: many clients of every API family start streams and vanish at every stage of a request.

After the run the engine has every slot free, neither the server nor the runner has grown, and a normal request is
answered. The run is bounded in time (``SOAK_SECONDS``), so it stays a test and not a benchmark.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import MODEL, ServerProcess, running_server

pytestmark = pytest.mark.e2e

CLIENTS = 80
CONCURRENCY = 8
SOAK_SECONDS = 30.0
GROWTH_LIMIT_KIB = 50 * 1024
PROMPTS = ["1, 2, 3,", "a, b, c,", "Count: one, two,", "10, 20, 30,"]

# (path, body) per API family; every one streams, and would run for a minute or more if the engine were not told
# that its client left: a leaked request shows as a busy slot long after the run.
FAMILIES: list[tuple[str, dict[str, Any]]] = [
    ("/api/generate", {"model": MODEL, "raw": True, "options": {"num_predict": 2000, "temperature": 0}}),
    ("/api/chat", {"model": MODEL, "options": {"num_predict": 2000}}),
    ("/v1/chat/completions", {"model": MODEL, "max_tokens": 2000, "stream": True}),
    ("/v1/completions", {"model": MODEL, "max_tokens": 2000, "stream": True}),
    ("/v1/messages", {"model": MODEL, "max_tokens": 2000, "stream": True}),
]


def _body(path: str, base: dict[str, Any], prompt: str) -> dict[str, Any]:
    if path in ("/api/generate", "/v1/completions"):
        return {**base, "prompt": prompt}
    return {**base, "messages": [{"role": "user", "content": prompt}]}


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


async def _client(url: str, n: int, rng: random.Random) -> str:
    """One client: a stream of one family, abandoned at a random stage. Returns how it left."""
    path, base = FAMILIES[n % len(FAMILIES)]
    body = _body(path, base, rng.choice(PROMPTS) + f" {n}")
    how = rng.choice(["before-headers", "after-headers", "first-chunk", "some-chunks", "cancelled"])
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        if how == "before-headers":  # gone while queued or loading
            task = asyncio.ensure_future(client.post(path, json=body))
            await asyncio.sleep(rng.uniform(0.0, 0.05))
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return how
        async with client.stream("POST", path, json=body) as response:
            assert response.status_code == 200, (path, await response.aread())
            if how == "after-headers":
                return how
            wanted = 1 if how == "first-chunk" else rng.randint(2, 12)
            got = 0

            async def read() -> None:
                nonlocal got
                async for chunk in response.aiter_raw():
                    if chunk:
                        got += 1
                        if got >= wanted and how != "cancelled":
                            return

            if how == "cancelled":  # the reading task is cancelled mid-stream, as an app shutting down does
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(read(), rng.uniform(0.05, 0.5))
            else:
                await read()
    return how


async def _soak(url: str, deadline: float) -> list[str]:
    rng = random.Random(20261125)
    gate = asyncio.Semaphore(CONCURRENCY)
    ways: list[str] = []

    async def one(n: int) -> None:
        async with gate:
            if time.monotonic() < deadline:
                ways.append(await _client(url, n, random.Random(rng.random())))

    await asyncio.gather(*(one(n) for n in range(CLIENTS)))
    return ways


def _idle(client: httpx.Client, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    entry: dict[str, Any] = {}
    while time.monotonic() < deadline:
        entry = next((m for m in client.get("/api/ps").json()["models"] if m["name"] == MODEL), {})
        if entry.get("slots_busy") == 0:
            return entry
        time.sleep(0.2)
    raise AssertionError(f"engine slots still busy {timeout} s after the clients left: {entry}")


def _sizes(srv: ServerProcess) -> tuple[int, int, int]:
    runners = srv.runner_pids()
    assert len(runners) == 1, runners
    return runners[0], _rss_kib(srv.proc.pid), _rss_kib(runners[0])


def test_abandoned_streams_soak(tmp_path: Path) -> None:
    # One engine thread: with two on a busy two-core machine, ggml's spinning thread barriers stall decoding for
    # seconds whenever a thread is descheduled, and the test would measure the machine's load rather than Corral.
    env = {"CORRAL_NUM_PARALLEL": "4", "CORRAL_CONTEXT_LENGTH": "2048", "CORRAL_KEEP_ALIVE": "10m",
           "CORRAL_NUM_THREADS": "1"}
    with running_server(tmp_path, env) as srv, srv.client() as client:
        # warm-up: load the model and take every code path once, so the baseline includes lazy allocations
        assert client.post("/api/generate", json={"model": MODEL, "prompt": "hi", "stream": False,
                                                  "options": {"num_predict": 2}}).status_code == 200
        asyncio.run(_soak_once(srv.url))
        _idle(client)
        runner, server_before, runner_before = _sizes(srv)

        started = time.monotonic()
        ways = asyncio.run(asyncio.wait_for(_soak(srv.url, started + SOAK_SECONDS - 10), SOAK_SECONDS))
        elapsed = time.monotonic() - started
        assert len(ways) >= 40, f"only {len(ways)} clients ran in {elapsed:.1f} s"
        assert set(ways) == {"before-headers", "after-headers", "first-chunk", "some-chunks", "cancelled"}

        entry = _idle(client)
        assert entry["parallel"] == 4
        runner_now, server_after, runner_after = _sizes(srv)
        assert runner_now == runner, "the runner was restarted during the soak"
        assert server_after - server_before < GROWTH_LIMIT_KIB, (server_before, server_after)
        assert runner_after - runner_before < GROWTH_LIMIT_KIB, (runner_before, runner_after)

        done = client.post("/api/chat", json={"model": MODEL, "stream": False, "options": {"num_predict": 4},
                                              "messages": [{"role": "user", "content": "Say hello"}]})
        assert done.status_code == 200 and done.json()["done"] is True, done.text
        assert done.json()["eval_count"] >= 1
        assert srv.proc.poll() is None
    assert "Traceback" not in srv.log_text()


async def _soak_once(url: str) -> None:
    """One client of every family and every way of leaving (the warm-up)."""
    await asyncio.gather(*(_client(url, n, random.Random(n)) for n in range(len(FAMILIES) * 2)))
