"""Sustained load and long histories: does the runner's memory level off, and does fitting scale with num_ctx?

``python -m benchmarks.soak [--minutes 10] [--clients 4] [--history 10000]``

1. Soak: ``--clients`` streaming ``/api/chat`` clients, each request a prompt no other request used (so every one
   leaves a fresh prompt state in the engine's prompt cache), for ``--minutes``. The runner's RSS is sampled every
   5 s; the report gives the curve (one point a minute), the growth from the end of warm-up (the first 2 minutes, or
   a fifth of a short run) to the end, and the requests served.
2. History: one ``/api/chat`` with ``--history`` tiny messages at ``num_ctx`` 512 and ``num_predict`` 1, timed on the
   client (best of three), next to a two-message chat on the same server: the difference is the fitting.

Prints a JSON summary (and writes it with ``--out``). Everything runs against a ``corral serve`` on a free loopback
port with a temporary store, stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks import procs
from benchmarks.clients import MODEL


def _runner_pid(server: procs.Started) -> int:
    kids = procs.children(server.pid)
    if len(kids) != 1:
        raise RuntimeError(f"expected one runner, found {kids}")
    return kids[0]


def soak(server: procs.Started, minutes: float, clients: int) -> dict[str, Any]:
    stop = threading.Event()
    lock = threading.Lock()
    served = [0]
    errors: list[str] = []

    def client(n: int) -> None:
        with httpx.Client(base_url=server.url, timeout=300) as c:
            while not stop.is_set():
                with lock:
                    i = served[0] * clients + n
                words = " ".join(f"w{(i * 13 + k) % 9973}" for k in range(60))
                body = {"model": MODEL, "messages": [{"role": "user", "content": f"Request {i}: {words}"}],
                        "options": {"num_predict": 24}}
                try:
                    with c.stream("POST", "/api/chat", json=body) as r:
                        for _ in r.iter_lines():
                            pass
                except httpx.HTTPError as exc:
                    errors.append(str(exc))
                with lock:
                    served[0] += 1

    httpx.post(server.url + "/api/chat", json={"model": MODEL, "messages": []}, timeout=300)  # load
    runner = _runner_pid(server)
    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    samples: list[tuple[float, int, int]] = []  # (seconds, RSS KiB, requests served)
    try:
        while (elapsed := time.monotonic() - started) < minutes * 60:
            samples.append((elapsed, procs.status_kib(runner, "VmRSS"), served[0]))
            time.sleep(5)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=300)
    samples.append((time.monotonic() - started, procs.status_kib(runner, "VmRSS"), served[0]))
    warmup = min(120.0, minutes * 60 / 5)
    after = [s for s in samples if s[0] >= warmup]
    curve = [s for s in samples if int(s[0]) % 60 < 5] + [samples[-1]]
    return {
        "minutes": minutes, "clients": clients, "requests": served[0], "errors": len(errors),
        "rss_mib_start": round(samples[0][1] / 1024), "rss_mib_after_warmup": round(after[0][1] / 1024),
        "rss_mib_end": round(samples[-1][1] / 1024), "rss_mib_max": round(max(s[1] for s in samples) / 1024),
        "growth_after_warmup_mib": round((samples[-1][1] - after[0][1]) / 1024, 1),
        "requests_after_warmup": samples[-1][2] - after[0][2],
        "curve": [{"minute": round(s[0] / 60, 1), "rss_mib": round(s[1] / 1024), "requests": s[2]} for s in curve],
    }


def history(server: procs.Started, messages: int) -> dict[str, Any]:
    def timed(count: int) -> float:
        chat = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"note {i}"} for i in range(count)]
        chat.append({"role": "user", "content": "What was the last note?"})
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            r = httpx.post(server.url + "/api/chat", timeout=900, json={
                "model": MODEL, "messages": chat, "stream": False, "options": {"num_ctx": 512, "num_predict": 1}})
            r.raise_for_status()
            best = min(best, time.perf_counter() - t0)
        return best

    short, long = timed(2), timed(messages)
    return {"messages": messages, "num_ctx": 512, "short_chat_s": round(short, 3), "long_chat_s": round(long, 3),
            "fitting_s": round(long - short, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--history", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    result: dict[str, Any] = {"machine": procs.machine(), "loadavg_start": procs.loadavg()}
    with tempfile.TemporaryDirectory(prefix="corral-soak-") as tmp:
        server = procs.start_corral(Path(tmp), threads=args.threads, extra_env={"CORRAL_NUM_PARALLEL": "4"})
        try:
            if args.history:
                result["history"] = history(server, args.history)
            if args.minutes > 0:
                result["soak"] = soak(server, args.minutes, args.clients)
        finally:
            server.stop()
    result["loadavg_end"] = procs.loadavg()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)
    growth = result.get("soak", {}).get("growth_after_warmup_mib")
    if growth is not None:
        print(f"runner RSS after warm-up: {growth:+} MiB over {result['soak']['requests_after_warmup']} requests",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
