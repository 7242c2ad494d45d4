"""Where the API server spends its CPU: py-spy samples of ``corral serve`` under two workloads.

    python -m benchmarks.profile            # needs `pip install py-spy`

Workloads: (1) decode, one stream of 256 greedy tokens at a time; (2) short ``/api/generate`` requests one after
another (the per-request work behind time to first token); (3) 50 clients hammering ``GET /api/tags``.
For each it prints the server's CPU seconds per token or per request and the functions with the most samples (self
and inclusive), and keeps py-spy's collapsed stacks under ``benchmarks/results/`` for flame-graph tools.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/profile.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from benchmarks import clients, procs
from benchmarks.clients import MODEL, TIMEOUT

RESULTS = Path(__file__).resolve().parent / "results"
IDLE = ("EpollSelector.select", "Condition.wait", "Event.wait", "select (selectors")  # waiting, not working


def record(pid: int, out: Path, work: Callable[[], int], rate: int = 250) -> tuple[float, int]:
    """py-spy on ``pid`` while ``work()`` runs; returns (server CPU seconds, work units) and leaves stacks in out."""
    spy = subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw",
                            "--nonblocking", "--output", str(out)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    c0 = procs.cpu_seconds(pid)
    units = work()
    cpu = procs.cpu_seconds(pid) - c0
    spy.send_signal(signal.SIGINT)
    try:
        spy.wait(timeout=30)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait()
    return cpu, units


def top(stacks: Path, n: int = 25) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """(self, inclusive) shares of busy samples per function from py-spy's collapsed stacks (idle waits dropped)."""
    self_count: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in stacks.read_text(errors="replace").splitlines():
        frames, _, count = line.rpartition(" ")
        if not frames or not count.isdigit():
            continue
        k = int(count)
        names = [f.strip() for f in frames.split(";")]
        names = [f for f in names if not f.startswith(("process ", "thread "))]
        if not names or names[-1].startswith(IDLE):
            continue
        total += k
        self_count[names[-1]] += k
        for name in set(names):
            incl[name] += k
    share = 100.0 / max(total, 1)
    return ([(f, c * share) for f, c in self_count.most_common(n)],
            [(f, c * share) for f, c in incl.most_common(n * 3)])


def show(title: str, stacks: Path, cpu: float, units: int, unit: str) -> None:
    print(f"\n== {title}: server CPU {cpu * 1e3 / max(units, 1):.3f} ms per {unit} ({units} {unit}s) ==")
    self_rows, incl_rows = top(stacks)
    print("-- self (% of samples)")
    for name, pct in self_rows:
        print(f"{pct:6.1f}%  {name}")
    print("-- inclusive, corral/ and the HTTP stack (% of samples)")
    keep = ("corral/", "httpx", "httpcore", "starlette", "fastapi", "uvicorn", "h11", "pydantic", "json", "asyncio",
            "anyio")
    for name, pct in [r for r in incl_rows if any(k in r[0] for k in keep)][:30]:
        print(f"{pct:6.1f}%  {name}")


def main(argv: list[str] | None = None) -> int:
    """Start Corral, profile the two workloads, print the summaries."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--streams", type=int, default=4, help="sequential decode streams")
    ap.add_argument("--requests", type=int, default=100, help="sequential short generate requests")
    args = ap.parse_args(argv)
    if shutil.which("py-spy") is None:
        print("py-spy is not installed: pip install py-spy", file=sys.stderr)
        return 2
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="corral-profile-") as tmp:
        corral = procs.start_corral(Path(tmp))
        try:
            http = httpx.Client(base_url=corral.url, timeout=TIMEOUT)
            body = {"model": MODEL, "prompt": "Count from 1 to 300, separated by commas.",
                    "options": {"temperature": 0, "num_predict": args.tokens}}
            clients.corral_stream(http, "/api/generate", {**body, "options": {"num_predict": 4}})  # load

            def decode() -> int:
                return sum(clients.corral_stream(http, "/api/generate", body).eval_count
                           for _ in range(args.streams))

            out = RESULTS / f"profile-{stamp}-decode.txt"
            cpu, n = record(corral.pid, out, decode)
            show("decode", out, cpu, n, "token")

            def short() -> int:
                for i in range(args.requests):
                    clients.corral_stream(http, "/api/generate", {
                        "model": MODEL, "prompt": f"Say hello to friend number {i}.",
                        "options": {"temperature": 0, "num_predict": 1}})
                return args.requests

            out = RESULTS / f"profile-{stamp}-request.txt"
            cpu, n = record(corral.pid, out, short)
            show("short /api/generate requests (1 token)", out, cpu, n, "request")

            def tags() -> int:
                latencies, _, _ = clients.hammer(corral.port, "GET", "/api/tags", None, 50, 40)
                return len(latencies)

            out = RESULTS / f"profile-{stamp}-tags.txt"
            cpu, n = record(corral.pid, out, tags)
            show("GET /api/tags, 50 clients", out, cpu, n, "request")
            print(f"\ncollapsed stacks: {RESULTS}/profile-{stamp}-*.txt")
        finally:
            corral.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
