"""Start, watch and stop one runner process (the engine hosting one model).

The server owns each runner: it starts it, reads its readiness line, keeps the tail of its log for error messages,
and kills it on unload. The runner kills itself if the server dies (see ``engine_main``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import secrets
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

from corral import config
from corral.inference.runner.client import EngineClient

log = logging.getLogger("corral.runner")


class RunnerError(RuntimeError):
    """The engine could not load the model, or died; the message is meant for the API client."""


@dataclass
class LaunchSpec:
    """Everything that is fixed for the life of a runner; a change in any of it needs a new runner."""

    model: str
    num_ctx: int
    parallel: int
    num_batch: int = 512
    num_thread: int = 0
    num_gpu: int = -1
    use_mmap: bool | None = None
    num_keep: int = 4
    embedding: bool = False
    reranking: bool = False  # a cross-encoder scoring (query, document) pairs: pooling RANK, the /rerank endpoint
    pooling: str | None = None  # "last" to embed with a decoder LLM; None: the GGUF's own pooling
    adapters: list[str] = field(default_factory=list)
    slot_save_path: str | None = None
    # Speculative decoding (corral.inference.speculative): engine method names (--spec-type), a draft model, its length.
    speculative: list[str] = field(default_factory=list)
    draft: str | None = None
    draft_max: int = 0

    def to_json(self, api_key: str) -> dict[str, Any]:
        return {**self.__dict__, "api_key": api_key}

    def external_args(self, binary: str, port: int, api_key: str) -> list[str]:
        """The same launch as ``llama-server`` flags, for ``CORRAL_LLAMA_SERVER``."""
        args = [
            binary, "-m", self.model, "--host", "127.0.0.1", "--port", str(port), "--api-key", api_key,
            "-c", str(self.num_ctx * self.parallel), "-np", str(self.parallel), "-b", str(self.num_batch),
            "-t", str(self.num_thread or (os.cpu_count() or 1)), "--jinja", "--slots", "--props", "--no-warmup",
            "--context-shift", "--keep", str(self.num_keep),
        ]
        if self.num_gpu >= 0:
            args += ["-ngl", str(self.num_gpu)]
        if self.use_mmap is False:
            args.append("--no-mmap")
        if self.embedding:
            args.append("--embedding")
        if self.reranking:
            args.append("--reranking")
        if self.pooling:
            args += ["--pooling", self.pooling]
        for adapter in self.adapters:
            args += ["--lora", adapter]
        if self.slot_save_path:
            args += ["--slot-save-path", self.slot_save_path]
        if self.speculative:
            args += ["--spec-type", ",".join(self.speculative)]
        if self.draft:
            args += ["-md", self.draft, "--spec-draft-n-max", str(self.draft_max),
                     "--spec-draft-threads", str(self.num_thread or (os.cpu_count() or 1))]
            if self.num_gpu >= 0:
                args += ["--spec-draft-ngl", str(self.num_gpu)]
        return args


class RunnerProcess:
    """One engine process and the client that talks to it."""

    def __init__(self, spec: LaunchSpec) -> None:
        self.spec = spec
        self._api_key = secrets.token_urlsafe(24)
        self._proc: asyncio.subprocess.Process | None = None
        self._log_tail: collections.deque[str] = collections.deque(maxlen=40)
        self._stderr_task: asyncio.Task[None] | None = None
        self.client: EngineClient | None = None
        self.url = ""
        self._socket_dir: str | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    def exit_message(self) -> str:
        """Why the engine stopped: its exit status and the last meaningful log line."""
        code = self._proc.returncode if self._proc else None
        status = f"exit status {code}" if code is not None and code >= 0 else f"signal {-(code or 0)}"
        detail = next((line for line in reversed(self._log_tail) if " E " in line or "error" in line.lower()), "")
        return f"llama-server process no longer running: {status} {detail}".strip()

    async def start(self, timeout: float) -> None:
        external = config.llama_server_binary()
        env = dict(os.environ)
        if external:
            port = _free_port()
            args = self.spec.external_args(external, port, self._api_key)
            self._proc = await asyncio.create_subprocess_exec(
                *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE, env=env, limit=1 << 20,
            )
            self.url = f"http://127.0.0.1:{port}"
        else:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "corral.inference.runner.wheel",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env=env, limit=1 << 20,
            )
        self._stderr_task = asyncio.create_task(self._drain_stderr())
        try:
            await asyncio.wait_for(self._await_ready(external is not None), timeout)
        except TimeoutError:
            await self.stop()
            raise RunnerError(f"timed out waiting for llama runner to start after {timeout:.0f}s") from None
        except RunnerError:
            await self.stop()
            raise
        self.client = EngineClient(self.url, self._api_key)
        if external:
            await self._await_health(timeout)
        log.info("runner pid=%s serving %s on %s", self.pid, os.path.basename(self.spec.model), self.url)

    async def _await_ready(self, external: bool) -> None:
        assert self._proc is not None
        if external:
            return
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._socket_dir = tempfile.mkdtemp(prefix="corral-runner-")  # mode 0700: only this user can connect
        launch = {**self.spec.to_json(self._api_key), "socket": os.path.join(self._socket_dir, "engine.sock")}
        self._proc.stdin.write((json.dumps(launch) + "\n").encode())
        await self._proc.stdin.drain()
        self._proc.stdin.close()
        while True:
            line = await self._proc.stdout.readline()
            if not line:
                await self._proc.wait()
                raise RunnerError(self._load_failure())
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if event.get("event") == "ready":
                self.url = event["url"]
                return
            if event.get("event") == "error":
                raise RunnerError(f"failed to load model: {event.get('error')}")

    async def _await_health(self, timeout: float) -> None:
        assert self.client is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if not self.alive():
                raise RunnerError(self._load_failure())
            if await self.client.healthy():
                return
            await asyncio.sleep(0.1)
        raise RunnerError("timed out waiting for llama runner to start")

    def _load_failure(self) -> str:
        errors = [line for line in self._log_tail if " E " in line or "error" in line.lower() or "failed" in line]
        detail = errors[-1].strip() if errors else "llama runner process has terminated"
        return f"failed to load model: {detail}"

    async def _drain_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        debug = config.debug()
        while True:
            try:
                line = await self._proc.stderr.readline()
            except ValueError:  # a line over the stream limit: skip it
                continue
            if not line:
                return
            text = line.decode(errors="replace").rstrip()
            self._log_tail.append(text)
            if debug:
                log.debug("runner %s: %s", self.pid, text)

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if the engine does not exit within 5 s."""
        if self.client is not None:
            await self.client.aclose()
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._stderr_task is not None:
            self._stderr_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._stderr_task
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
