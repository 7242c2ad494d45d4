"""Runner processes: start, watch and stop the process that hosts an engine on one model.

The server owns each runner: it starts it, waits until it serves, keeps the tail of its log for error messages, and
kills it on unload. Two kinds implement :class:`~corral.inference.runner.base.Runner`:

- :class:`WheelRunner`, the default: ``python -m corral.inference.runner.wheel`` hosts the ``xllamacpp`` wheel's
  engine. It reads its launch spec on stdin (so the API key never shows in the process list), listens on a Unix
  socket in a fresh 0700 directory, announces itself on stdout and dies with the server.
- :class:`ServerBinaryRunner`: a ``llama-server`` binary (an engine built by ``corral engine build``, or
  ``CORRAL_LLAMA_SERVER``) started with the same settings as flags, and as private as the wheel's: a Unix socket
  in a fresh 0700 directory, the API key read from stdin (``--api-key-file /dev/stdin``), never on the command
  line, and the kernel kills it when the server dies.

Which one runs is decided once per server, in :mod:`corral.engines.select`.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import ctypes
import json
import logging
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from corral import config
from corral.engines.catalog import Engine
from corral.errors import RunnerError
from corral.inference.runner.base import Runner
from corral.inference.runner.client import RunnerClient
from corral.inference.runner.placement import Placement
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
    """The runner for a launch, on the engine this server runs (chosen once: :func:`corral.engines.select.current`)."""
    from corral.engines import select

    engine = select.current().engine
    if engine is None:
        return WheelRunner(spec)
    from corral.inference.runner.engines import EngineLaunch

    return ServerBinaryRunner(spec, engine, EngineLaunch(spec, engine))


class _EngineProcess(abc.ABC):
    """What both runners share: the child process, its log tail, and how it is stopped and explained."""

    engine = "wheel"  # which engine runs the model, as /api/ps names it

    def __init__(self, spec: LaunchSpec) -> None:
        self.spec = spec
        self.placement = Placement()  # where the engine put the model (from its load log), and what was planned
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
        """Running, and not a zombie: a connection to an engine that has just died breaks before the event loop has
        reaped it, and the error should already say that it died (and why)."""
        if self._proc is None or self._proc.returncode is not None:
            return False
        try:
            state = Path(f"/proc/{self._proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True  # no /proc: trust the event loop
        return state != "Z"

    def exit_message(self) -> str:
        code = self._proc.returncode if self._proc else None
        # not reaped yet (a zombie): the status is not known
        status = "it exited" if code is None else f"exit status {code}" if code >= 0 else f"signal {-code}"
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

    async def _spawn(self, *args: str, stdin: int, stdout: int,
                     preexec_fn: Callable[[], None] | None = None) -> asyncio.subprocess.Process:
        self._proc = await asyncio.create_subprocess_exec(
            *args, stdin=stdin, stdout=stdout, stderr=asyncio.subprocess.PIPE, env=dict(os.environ), limit=1 << 20,
            preexec_fn=preexec_fn)
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
            self.placement.add_line(text)
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
    """A ``llama-server`` binary: the same launch as command-line flags, on a Unix socket in a private directory."""

    def __init__(self, spec: LaunchSpec, engine: Engine | str, plan: LaunchPlan | None = None) -> None:
        super().__init__(spec)
        if isinstance(engine, str):
            from corral.engines.catalog import external

            engine = external(Path(engine))
        self.binary = str(engine.server)
        self.engine = engine.label
        self._plan = plan

    async def _launch(self) -> str:
        extra = await self._plan.prepare(self.placement) if self._plan is not None else []
        self._socket_dir = tempfile.mkdtemp(prefix=SOCKET_DIR_PREFIX)  # mode 0700: only this user can connect
        with open(os.path.join(self._socket_dir, OWNER_FILE), "w", encoding="ascii") as owner:
            owner.write(str(os.getpid()))  # whose it is, so a later start can tell a killed server's leftovers
        sock = os.path.join(self._socket_dir, "engine.sock")
        # The key goes into a pipe that becomes the engine's stdin, read with --api-key-file /dev/stdin: a real pipe,
        # since /dev/stdin cannot be opened on the socket pair an event loop's PIPE may be. It fits the pipe's
        # buffer, so it is written and closed before the engine starts.
        read_end, write_end = os.pipe()
        try:
            os.write(write_end, (self._api_key + "\n").encode())
            os.close(write_end)
            proc = await self._spawn(*server_flags(self.spec, self.binary, sock, extra=extra), stdin=read_end,
                                     stdout=asyncio.subprocess.DEVNULL, preexec_fn=_die_with(os.getpid()))
        finally:
            with contextlib.suppress(OSError):
                os.close(write_end)
            os.close(read_end)
        url = "unix://" + sock
        self._client = RunnerClient(url, self._api_key)
        while not await self._client.healthy():
            if not self.alive():
                await proc.wait()
                raise RunnerError(self._load_failure())
            await asyncio.sleep(0.05)
        return url

    def _load_failure(self) -> str:
        message = super()._load_failure()
        return self._plan.explain(message, list(self._log_tail)) if self._plan is not None else message

    def exit_message(self) -> str:
        message = super().exit_message()
        return self._plan.explain(message, list(self._log_tail)) if self._plan is not None else message


class LaunchPlan(Protocol):
    """What an engine adds to a binary runner's launch (GPU layers, RPC workers): :mod:`.engines`."""

    async def prepare(self, placement: Placement) -> list[str]:
        """Extra ``llama-server`` flags for this load; raises RunnerError when it cannot load as configured."""

    def explain(self, message: str, log_tail: list[str]) -> str:
        """A failure message with what the engine's setup knows about it (a worker that went away)."""


PR_SET_PDEATHSIG = 1
_libc: ctypes.CDLL | None = None
with contextlib.suppress(OSError):
    _libc = ctypes.CDLL(None, use_errno=True)


def _die_with(parent: int) -> Callable[[], None] | None:
    """Run in the child between fork and exec: the kernel SIGKILLs it when the server dies (the wheel's child arms
    the same signal itself)."""
    if _libc is None or not sys.platform.startswith("linux"):
        return None
    prctl = _libc.prctl

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the server died before the call above
            os._exit(1)

    return arm


_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[/\\][\w.+~-]+)+[/\\]([\w.+~-]+)")


def without_paths(text: str) -> str:
    """An engine message fit for a client: file paths (the wheel's build tree in a GGML_ASSERT, the store's blob
    paths) cut to their last part."""
    return _PATH.sub(r"\1", text)


def server_flags(spec: LaunchSpec, binary: str, listen: str, *, key_file: str = "/dev/stdin",
                 extra: Sequence[str] = ()) -> list[str]:
    """A launch spec as ``llama-server`` command-line flags: the engine settings the wheel's runner makes
    (:func:`corral.inference.runner.wheel.build_params`). ``listen`` is a socket path ending in ``.sock`` or
    ``HOST:PORT``; the API key is read from ``key_file``, never passed as an argument."""
    threads = str(spec.num_thread or (os.cpu_count() or 1))
    host, port = (listen, "8080") if listen.endswith(".sock") else listen.rsplit(":", 1)
    ubatch = spec.num_batch if spec.embedding else min(spec.num_batch, 512)  # an encoder's input in one micro-batch
    args = [
        binary, "-m", spec.model, "--host", host, "--port", port, "--api-key-file", key_file,
        "-c", str(spec.num_ctx * spec.parallel), "-np", str(spec.parallel), "-b", str(spec.num_batch),
        "-ub", str(ubatch), "-t", threads, "-tb", threads, "--jinja", "--slots", "--props", "--no-warmup",
        "--context-shift", "--keep", str(spec.num_keep),
    ]
    if spec.num_gpu >= 0:
        args += ["-ngl", str(spec.num_gpu)]
    args += ["-fa", spec.flash_attention, "-ctk", spec.cache_type, "-ctv", spec.cache_type]
    if spec.use_mmap is False:  # this llama.cpp has no --no-mmap; the wheel's runner sets the same load mode
        args += ["--load-mode", "none"]
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
    args += extra
    if spec.speculative:
        args += ["--spec-type", ",".join(spec.speculative)]
    if spec.draft:
        args += ["-md", spec.draft, "--spec-draft-n-max", str(spec.draft_max), "--spec-draft-threads", threads]
        if spec.num_gpu >= 0:
            args += ["--spec-draft-ngl", str(spec.num_gpu)]
    return args
