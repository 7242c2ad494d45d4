"""Progress on stderr without heavy imports: the waiting spinner, and the text of Ollama's progress lines.

The lines are pure functions of their numbers (``pulling 74701a8c35f6: 100% ▕████▏ 1.3 GB/1.3 GB  34 MB/s  1m2s``)
so they can be tested exactly; :mod:`corral.cli.transfer` animates them with ``rich``.
"""

from __future__ import annotations

import sys
import threading
from typing import TextIO

from corral.cli.format import human_bytes

FRAMES = ("⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏")


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Spinner:
    """A bare spinner while the model loads or thinks of its first token; draws only on a terminal and erases
    itself when stopped, so it never mixes with the answer on stdout."""

    def __init__(self, stream: TextIO | None = None, message: str = "") -> None:
        self.stream = stream or sys.stderr
        self.message = message
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> Spinner:
        if is_terminal(self.stream) and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="corral-spinner", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        frame = 0
        prefix = f"{self.message} " if self.message else ""
        while True:
            with self._lock:
                if self._stop.is_set():
                    return
                self.stream.write(f"\x1b[?25l\r{prefix}{FRAMES[frame % len(FRAMES)]} ")
                self.stream.flush()
            frame += 1
            if self._stop.wait(0.1):
                return

    def stop(self) -> None:
        """Stop and clear the line (idempotent)."""
        if self._thread is None:
            return
        with self._lock:
            self._stop.set()
            self.stream.write("\r\x1b[K\x1b[?25h")
            self.stream.flush()
        self._thread.join(timeout=1.0)
        self._thread = None

    def __enter__(self) -> Spinner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def format_eta(seconds: float) -> str:
    """``progress.formatDuration``: at most two units: ``59s``, ``12m3s``, ``2h5m``, ``99h+``."""
    whole = int(seconds + 0.5)
    if whole >= 100 * 3600:
        return "99h+"
    if whole >= 3600:
        return f"{whole // 3600}h{whole % 3600 // 60}m"
    if whole >= 60:
        return f"{whole // 60}m{whole % 60}s"
    return f"{whole}s"


def bar_line(label: str, total: int, completed: int, width: int, rate: float | None, running: bool) -> str:
    """One bar line exactly as Ollama's ``progress.Bar.String`` lays it out for a terminal ``width`` wide."""
    percent = completed / total * 100 if total > 0 else 0.0
    pre = (f"{label.strip()}: " if label.strip() else "") + f"{percent:3.0f}%"
    if running:
        current, maximum = human_bytes(completed), human_bytes(total)
        suf = current.rjust(6) + "/" + maximum.rjust(6)
    else:
        suf = human_bytes(total).rjust(6) + " " * 7
    if running and rate and rate > 0:
        suf += "  " + human_bytes(int(rate)).rjust(6) + "/s"
        suf += "  " + format_eta(max(total - completed, 0) / rate).rjust(6)
    else:
        suf += " " * 10 + " " * 8
    free = width - len(pre) - len(suf) - 5
    filled = int(free * percent / 100)
    mid = " ▕" + "█" * max(filled, 0) + " " * max(free - filled, 0) + "▏ "
    return pre + mid + suf


def spinner_line(message: str, running: bool, frame: int) -> str:
    text = f"{message.strip()} " if message.strip() else ""
    return text + (f"{FRAMES[frame % len(FRAMES)]} " if running else "")
