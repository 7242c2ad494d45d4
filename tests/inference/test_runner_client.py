"""The runner client against the real engine, over both transports it speaks: the Unix socket
Corral's runners listen on, and loopback TCP (an external ``llama-server`` via ``CORRAL_LLAMA_SERVER``)."""

from __future__ import annotations

import asyncio
import pathlib
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import SMOL_FILE, bundled_file

from corral.errors import RunnerReplyError, RunnerUnreachable
from corral.inference.runner.client import RunnerClient

pytestmark = pytest.mark.e2e  # an engine in this process, or a runner process

KEY = "runner-client-test-key"


def _model() -> pathlib.Path:
    return bundled_file(*SMOL_FILE)


@pytest.fixture(scope="module", params=["unix", "tcp"])
def engine_url(request: pytest.FixtureRequest) -> Iterator[str]:
    import xllamacpp

    p = xllamacpp.CommonParams()
    p.model.path = str(_model())
    p.n_ctx = 1024
    p.n_parallel = 1
    p.cpuparams.n_threads = 1
    p.cpuparams_batch.n_threads = 1
    p.warmup = False
    p.api_keys = [KEY]
    with tempfile.TemporaryDirectory(prefix="corral-client-") as d:
        p.hostnames = [f"{d}/engine.sock"] if request.param == "unix" else ["127.0.0.1"]
        p.port = 0
        engine = xllamacpp.Server(p)
        try:
            address = str(engine.listening_address)
            yield address if address.startswith(("unix://", "http")) else "http://" + address
        finally:
            del engine


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_plain_requests(engine_url: str) -> None:
    client = RunnerClient(engine_url, KEY)
    assert run(client.healthy())
    tokens = run(client.tokenize("Hello world"))
    assert tokens and run(client.detokenize(tokens)) == "Hello world"
    assert run(client.get("/props"))["total_slots"] == 1


def test_stream_yields_every_event_then_the_final_one(engine_url: str) -> None:
    client = RunnerClient(engine_url, KEY)

    async def collect() -> list[dict[str, Any]]:
        return [e async for e in client.stream("/completion", {"prompt": "1, 2, 3,", "n_predict": 12,
                                                                  "temperature": 0, "return_tokens": True})]

    events = run(collect())
    assert events[-1]["stop"] is True and events[-1]["timings"]["predicted_n"] == 12
    assert sum(len(e.get("tokens") or []) for e in events[:-1]) == 12
    assert "".join(e.get("content", "") for e in events)  # text arrived, token by token


def test_engine_errors_keep_their_status(engine_url: str) -> None:
    with pytest.raises(RunnerReplyError) as info:
        run(RunnerClient(engine_url, "wrong-key").tokenize("x"))
    assert info.value.engine_status == 401

    async def bad_stream() -> None:
        async for _ in RunnerClient(engine_url, KEY).stream("/completion", {"prompt": 5}):
            pass

    with pytest.raises(RunnerReplyError) as info:
        run(bad_stream())
    assert info.value.engine_status == 400


def test_a_closed_engine_is_unreachable(tmp_path: pathlib.Path) -> None:
    for url in (f"unix://{tmp_path}/absent.sock", "http://127.0.0.1:9"):
        client = RunnerClient(url, KEY)
        assert not run(client.healthy())
        with pytest.raises(RunnerUnreachable):
            run(client.tokenize("x"))


def test_runner_socket_is_private_and_removed_at_stop() -> None:
    """A runner's socket lies in a directory only this user can enter, and the directory goes with the runner."""
    import os
    import stat

    from corral.inference.runner.process import WheelRunner
    from corral.inference.runner.spec import LaunchSpec

    async def lifecycle() -> tuple[str, int, bool, bool]:
        runner = WheelRunner(LaunchSpec(model=str(_model()), num_ctx=512, parallel=1, num_thread=1))
        await runner.start(timeout=120)
        try:
            assert runner.client is not None
            url = runner.client.base_url
            path = url.removeprefix("unix://")
            mode = stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode)
            healthy = await runner.client.healthy()
        finally:
            await runner.stop()
        return url, mode, healthy, os.path.exists(os.path.dirname(path))

    url, mode, healthy, still_there = run(lifecycle())
    assert url.startswith("unix://") and mode == 0o700 and healthy and not still_there
