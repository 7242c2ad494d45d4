"""What ``CORRAL_METRICS`` costs on the request path, measured in-process.

    python -m benchmarks.metrics

Three numbers, each the median of 7 runs (the machine is shared), in microseconds:

- ``hooks``: what the middleware records per request (``requests.inc`` + ``latency.observe``), 20,000 times over
  40 label sets (routes x statuses), without any ASGI around it;
- ``middleware``: ``MetricsMiddleware`` around a bare ASGI app that answers 200, 20,000 requests driven through
  the asyncio loop, minus the same requests sent to the bare app (the overhead a request pays);
- ``scrape``: one ``exposition()`` of a registry holding those 40 request series, 20 models' token counters and
  time-to-first-token histograms.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/metrics.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

N = 20_000
RUNS = 7
ROUTES = [("native", "/api/tags"), ("native", "/api/chat"), ("native", "/api/generate"), ("native", "/api/show"),
          ("openai", "/v1/chat/completions"), ("openai", "/v1/models"), ("anthropic", "/v1/messages"),
          ("native", "/api/embed"), ("other", "unmatched"), ("native", "/api/ps")]
STATUSES = ["200", "400", "404", "500"]


def _hooks(metrics: Any) -> float:
    registry = metrics.Registry()
    labels = [(f, r, s) for f, r in ROUTES for s in STATUSES]
    t0 = time.perf_counter()
    for i in range(N):
        family, route, status = labels[i % len(labels)]
        registry.requests.inc((family, route, status))
        registry.latency.observe((family, route), 0.0005 * (i % 7))
    return (time.perf_counter() - t0) / N * 1e6


async def _bare(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def _drive(app: Any) -> float:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    scopes = [{"type": "http", "path": route, "method": "GET"} for _, route in ROUTES]
    t0 = time.perf_counter()
    for i in range(N):
        await app(scopes[i % len(scopes)], receive, send)
    return (time.perf_counter() - t0) / N * 1e6


def _middleware(metrics: Any) -> float:
    wrapped = metrics.MetricsMiddleware(_bare, registry=metrics.Registry())
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(_drive(wrapped)) - loop.run_until_complete(_drive(_bare))
    finally:
        loop.close()


def _scrape(metrics: Any) -> float:
    registry = metrics.Registry()
    for family, route in ROUTES:
        for status in STATUSES:
            registry.requests.inc((family, route, status))
        registry.latency.observe((family, route), 0.01)
    for m in range(20):
        model = f"model-{m}:latest"
        registry.prompt_tokens.inc((model,), 100)
        registry.cached_tokens.inc((model,), 50)
        registry.generated_tokens.inc((model,), 10)
        registry.ttft.observe((model,), 0.2)
    t0 = time.perf_counter()
    for _ in range(200):
        registry.exposition()
    return (time.perf_counter() - t0) / 200 * 1e6


def main() -> int:
    from corral import metrics

    results: dict[str, list[float]] = {"hooks": [], "middleware": [], "scrape": []}
    for _ in range(RUNS):
        results["hooks"].append(_hooks(metrics))
        results["middleware"].append(_middleware(metrics))
        results["scrape"].append(_scrape(metrics))
    out = {name: round(statistics.median(values), 2) for name, values in results.items()}
    print(f"{metrics.__file__}: " + json.dumps(out) + "  (us; median of 7)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
