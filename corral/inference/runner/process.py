"""Runner processes: start, watch and stop the process that hosts an engine on one model.

The server owns each runner: it starts it, waits until it serves, keeps the tail of its log for error messages, and
kills it on unload. Two engines implement :class:`~corral.inference.runner.base.Runner`:

- :class:`WheelRunner`, the default: ``python -m corral.inference.runner.wheel`` hosts the ``xllamacpp`` wheel's
  engine. It reads its launch spec on stdin (so the API key never shows in the process list), listens on a Unix
  socket in a fresh 0700 directory, announces itself on stdout and dies with the server.
- :class:`ServerBinaryRunner`: an external ``llama-server`` binary (``CORRAL_LLAMA_SERVER``) started with the same
  options as flags, on a random loopback port.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
import time

from corral import config
from corral.errors import RunnerError
from corral.inference.runner.base import Runner
from corral.inference.runner.client import RunnerClient
from corral.inference.runner.spec import LaunchSpec

log = logging.getLogger("corral.runner")


SOCKET_DIR_PREFIX = "corral-runner-"
OWNER_FILE = "server.pid"


def remove_stale_socket_dirs(root: str | None = None, grace: float = 600.0) -> int:
    """Remove the runner socket directories a killed server left (``kill -9`` gives it no time to clean up): those
    whose owning server is gone, and unowned ones older than ``grace`` seconds. Returns how many went."""
    root = root or tempfile.gettempdir()
    removed = 0
    try:
        entries = list(os.scandir(root))
    except OSError:
        return 0
    for entry in entries:
        if not entry.name.startswith(SOCKET_DIR_PREFIX) or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_uid != os.getuid():
                continue
            with open(os.path.join(entry.path, OWNER_FILE), encoding="ascii") as owner:
                pid = int(owner.read().strip() or "0")
        except FileNotFoundError:
            pid = 0
        except (OSError, ValueError):
            continue
        if pid > 0 and _alive(pid):
            continue
        if pid <= 0 and time.time() - entry.stat(follow_symlinks=False).st_mtime < grace:
            continue  # no owner file yet: a runner being started right now
        shutil.rmtree(entry.path, ignore_errors=True)
        removed += 1
    if removed:
        log.info("removed %d runner socket director%s left by a stopped server", removed,
                 "y" if removed == 1 else "ies")
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def new_runner(spec: LaunchSpec) -> Runner:
    """The runner for a launch: the external binary when one is configured, else the wheel's engine."""
    binary = config.llama_server_binary()
    if binary:
        return ServerBinaryRunner(spec, binary)
    return WheelRunner(spec)


class _EngineProcess(abc.ABC):
    """What both runners share: the child process, its log tail, and how it is stopped and explained."""

    def __init__(self, spec: LaunchSpec) -> None:
        self.spec = spec
        self._api_key = secrets.token_urlsafe(24)
        self._proc: asyncio.subprocess.Process | None = None
        self._log_tail: collections.deque[str] = collections.deque(maxlen=40)
        self._stderr_task: asyncio.Task[None] | None = None
        self._client: RunnerClient | None = None
        self._socket_dir: str | None = None

    @property
    def client(self) -> RunnerClient | None:
        return self._client

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    def exit_message(self) -> str:
        code = self._proc.returncode if self._proc else None
        status = f"exit status {code}" if code is not None and code >= 0 else f"signal {-(code or 0)}"
        detail = next((line for line in reversed(self._log_tail) if " E " in line or "error" in line.lower()), "")
        return f"llama-server process no longer running: {status} {without_paths(detail)}".strip()

    async def start(self, timeout: float) -> None:
        try:
            url = await asyncio.wait_for(self._launch(), timeout)
        except TimeoutError:
            await self.stop()
            raise RunnerError(f"timed out waiting for llama runner to start after {timeout:.0f}s") from None
        except RunnerError:
            await self.stop()
            raise
        except OSError as exc:
            await self.stop()
            raise RunnerError(f"failed to start llama runner: {exc}") from exc
        except BaseException:  # cancelled: the client that asked for the load left; no runner may be left behind
            await asyncio.shield(self.stop())
            raise
        log.info("runner pid=%s serving %s on %s", self.pid, os.path.basename(self.spec.model), url)

    @abc.abstractmethod
    async def _launch(self) -> str:
        """Start the process and wait until its engine serves; returns its URL (the client is set by then)."""

    async def _spawn(self, *args: str, stdin: int, stdout: int) -> asyncio.subprocess.Process:
        self._proc = await asyncio.create_subprocess_exec(
            *args, stdin=stdin, stdout=stdout, stderr=asyncio.subprocess.PIPE, env=dict(os.environ), limit=1 << 20)
        self._stderr_task = asyncio.create_task(self._drain_stderr())
        return self._proc

    def _load_failure(self) -> str:
        errors = [line for line in self._log_tail if " E " in line or "error" in line.lower() or "failed" in line]
        detail = errors[-1].strip() if errors else "llama runner process has terminated"
        return f"failed to load model: {without_paths(detail)}"

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
        proc = self._proc
        if proc is not None and proc.returncode is None:
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


class WheelRunner(_EngineProcess):
    """The ``xllamacpp`` wheel's engine in a child process of Corral's own (``corral.inference.runner.wheel``)."""

    async def _launch(self) -> str:
        proc = await self._spawn(sys.executable, "-m", "corral.inference.runner.wheel",
                                 stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert proc.stdin is not None and proc.stdout is not None
        self._socket_dir = tempfile.mkdtemp(prefix=SOCKET_DIR_PREFIX)  # mode 0700: only this user can connect
        with open(os.path.join(self._socket_dir, OWNER_FILE), "w", encoding="ascii") as owner:
            owner.write(str(os.getpid()))  # whose it is, so a later start can tell a killed server's leftovers
        launch = {**self.spec.to_json(), "api_key": self._api_key,
                  "socket": os.path.join(self._socket_dir, "engine.sock")}
        proc.stdin.write((json.dumps(launch) + "\n").encode())
        await proc.stdin.drain()
        proc.stdin.close()
        while True:
            line = await proc.stdout.readline()
            if not line:
                await proc.wait()
                raise RunnerError(self._load_failure())
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if event.get("event") == "ready":
                self._client = RunnerClient(event["url"], self._api_key)
                return str(event["url"])
            if event.get("event") == "error":
                raise RunnerError(f"failed to load model: {without_paths(str(event.get('error')))}")


class ServerBinaryRunner(_EngineProcess):
    """An external ``llama-server`` binary: the same launch as command-line flags, on a random loopback port."""

    def __init__(self, spec: LaunchSpec, binary: str) -> None:
        super().__init__(spec)
        self.binary = binary

    async def _launch(self) -> str:
        port = _free_port()
        await self._spawn(*server_flags(self.spec, self.binary, port, self._api_key),
                          stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        self._client = RunnerClient(url, self._api_key)
        while not await self._client.healthy():
            if not self.alive():
                raise RunnerError(self._load_failure())
            await asyncio.sleep(0.1)
        return url


_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[/\\][\w.+~-]+)+[/\\]([\w.+~-]+)")


def without_paths(text: str) -> str:
    """An engine message fit for a client: file paths (the wheel's build tree in a GGML_ASSERT, the store's blob
    paths) cut to their last part."""
    return _PATH.sub(r"\1", text)


def server_flags(spec: LaunchSpec, binary: str, port: int, api_key: str) -> list[str]:
    """A launch spec as ``llama-server`` command-line flags."""
    threads = str(spec.num_thread or (os.cpu_count() or 1))
    args = [
        binary, "-m", spec.model, "--host", "127.0.0.1", "--port", str(port), "--api-key", api_key,
        "-c", str(spec.num_ctx * spec.parallel), "-np", str(spec.parallel), "-b", str(spec.num_batch),
        "-t", threads, "--jinja", "--slots", "--props", "--no-warmup", "--context-shift", "--keep", str(spec.num_keep),
    ]
    if spec.num_gpu >= 0:
        args += ["-ngl", str(spec.num_gpu)]
    args += ["-fa", spec.flash_attention, "-ctk", spec.cache_type, "-ctv", spec.cache_type]
    if spec.use_mmap is False:
        args.append("--no-mmap")
    if spec.embedding:
        args.append("--embedding")
    if spec.reranking:
        args.append("--reranking")
    if spec.pooling:
        args += ["--pooling", spec.pooling]
    for adapter in spec.adapters:
        args += ["--lora", adapter]
    if spec.projector:
        args += ["--mmproj", spec.projector]
        if spec.num_gpu == 0:
            args.append("--no-mmproj-offload")
    if spec.slot_save_path:
        args += ["--slot-save-path", spec.slot_save_path]
    if spec.cache_ram_mib is not None:
        args += ["--cache-ram", str(spec.cache_ram_mib)]
    if spec.speculative:
        args += ["--spec-type", ",".join(spec.speculative)]
    if spec.draft:
        args += ["-md", spec.draft, "--spec-draft-n-max", str(spec.draft_max), "--spec-draft-threads", threads]
        if spec.num_gpu >= 0:
            args += ["--spec-draft-ngl", str(spec.num_gpu)]
    return args


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
