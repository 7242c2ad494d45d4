"""The server ``corral run`` starts in the background: its record, ``corral server status`` and ``corral server stop``.

When the CLI starts a server (:mod:`corral.cli.autostart`), it records the server's PID, address and process start
time in ``$CORRAL_HOME/server.pid`` once the server answers (first line the PID alone, so ``kill $(head -n1 ...)``
works too). ``stop`` signals only a process that matches that record, PID *and* start time, so a PID the kernel
has since given to another program is never signalled; a server started any other way (``corral serve`` in a
terminal, systemd, a container) is reported, not stopped: it belongs to whoever started it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from corral import config

RECORD_NAME = "server.pid"


@dataclass(frozen=True)
class Record:
    pid: int
    host: str  # host:port the server listens on
    start_ticks: int | None  # /proc/<pid>/stat field 22; None where there is no /proc

    def text(self) -> str:
        return f"{self.pid}\n{self.host}\n{'' if self.start_ticks is None else self.start_ticks}\n"


def record_path() -> Path:
    return config.home() / RECORD_NAME


def process_start_ticks(pid: int) -> int | None:
    """When the process started, in clock ticks since boot (Linux ``/proc``); None when unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _state(pid: int) -> str | None:
    """The process's state letter (``Z`` for a zombie), or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().decode("ascii", "replace").rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return "?"


def write_record(pid: int, host: config.HostPort) -> Path:
    """Record a server this CLI started (written whole, then renamed, so a reader never sees half of it)."""
    if pid <= 1:  # 0 and -1 would mean a process group to kill(2); 1 is init
        raise ValueError(f"not a server's PID: {pid}")
    path = record_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    address = f"[{host.host}]" if ":" in host.host else host.host
    record = Record(pid, f"{address}:{host.port}", process_start_ticks(pid))
    tmp = path.with_name(f".{RECORD_NAME}.{os.getpid()}")
    tmp.write_text(record.text())
    os.replace(tmp, path)
    return path


def read_record() -> Record | None:
    """The recorded server, or None when there is no record or it does not parse."""
    try:
        lines = record_path().read_text().splitlines()
        ticks = lines[2].strip() if len(lines) > 2 else ""
        record = Record(int(lines[0]), lines[1].strip(), int(ticks) if ticks else None)
    except (OSError, ValueError, IndexError):
        return None
    return record if record.pid > 1 else None  # never a process group or init, whatever the file says


def alive(record: Record) -> bool:
    """Whether the recorded process still runs and is the same process (its start time matches)."""
    state = _state(record.pid)
    if state is None or state == "Z":
        return False
    if record.start_ticks is None:
        return True
    return process_start_ticks(record.pid) == record.start_ticks


def remove_record(record: Record | None = None) -> None:
    """Remove the record (only if it still describes ``record``, when given: another CLI may have rewritten it)."""
    if record is not None and read_record() != record:
        return
    with contextlib.suppress(FileNotFoundError):
        record_path().unlink()


def current() -> tuple[Record | None, Record | None]:
    """(the live recorded server, a stale record that was removed): at most one of them is set."""
    record = read_record()
    if record is None:
        return None, None
    if alive(record):
        return record, None
    remove_record(record)
    return None, record


def stop(record: Record, timeout: float, *, force: bool = False) -> bool:
    """SIGTERM the recorded server (it ends streams with an error line and stops its runners), wait up to
    ``timeout`` seconds; with ``force``, SIGKILL it after that. True when it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(record):
            remove_record(record)
            return True
        time.sleep(0.1)
    if force:
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signal.SIGKILL)
        for _ in range(50):
            if not alive(record):
                remove_record(record)
                return True
            time.sleep(0.1)
    return False
