"""Prometheus metrics at ``GET /metrics``, off unless ``CORRAL_METRICS`` is set.

Kept by ``prometheus_client`` in a ``CollectorRegistry`` of Corral's own (never the library's global default, so
several apps in one process do not share or collide), rendered by its text exposition (format 0.0.4). Costs nothing
while off: every hook returns at once.

What is measured:

- ``corral_requests_total{family,route,status}``: HTTP requests by API family (native, openai, anthropic, other),
  route template (``/api/chat``; ``unmatched`` for paths no route serves) and status code.
- ``corral_request_duration_seconds{family,route}``: time from a request's arrival to the end of its response body,
  streams included.
- ``corral_time_to_first_token_seconds{model}``: from the start of a generation (model load included) to its first
  output piece.
- ``corral_prompt_tokens_total{model}``, ``corral_prompt_cached_tokens_total{model}``,
  ``corral_generated_tokens_total{model}``: prompt tokens the engine evaluated (generation, embeddings, rerank),
  prompt tokens served from the prefix cache instead, and tokens generated.
- ``corral_loaded_models``, ``corral_queue_depth``: runners loaded now, and requests waiting for a runner or a slot,
  read from the scheduler at scrape time; ``corral_build_info{version}``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

import prometheus_client
from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral import __version__

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
MAX_SERIES = 2000  # per metric: label values come from model names, which clients choose

LabelValues = tuple[str, ...]
_Child = TypeVar("_Child", prometheus_client.Counter, prometheus_client.Histogram)


class _Family(Generic[_Child]):
    """One labelled prometheus_client metric, with its children kept by label tuple.

    The dict lookup spares the request path ``labels()``'s argument checks and lock on every call, and caps the
    series count, which prometheus_client does not.
    """

    def __init__(self, metric: _Child) -> None:
        self._metric: _Child = metric
        self._children: dict[LabelValues, _Child] = {}
        self._lock = threading.Lock()

    def child(self, values: LabelValues) -> _Child | None:
        found = self._children.get(values)
        if found is not None:
            return found
        with self._lock:
            found = self._children.get(values)
            if found is None:
                if len(self._children) >= MAX_SERIES:
                    return None
                found = self._children[values] = self._metric.labels(*values)
            return found


class Counter(_Family[prometheus_client.Counter]):
    def inc(self, values: LabelValues, amount: float = 1.0) -> None:
        child = self.child(values)
        if child is not None:
            child.inc(amount)


class Histogram(_Family[prometheus_client.Histogram]):
    def observe(self, values: LabelValues, amount: float) -> None:
        child = self.child(values)
        if child is not None:
            child.observe(amount)


class _ScrapeTime(Collector):
    """The gauges read when scraped: the scheduler's loaded runners and queue, and the build."""

    def __init__(self) -> None:
        self.scheduler: Any = None

    def collect(self) -> Iterator[Metric]:
        scheduler = self.scheduler
        yield GaugeMetricFamily("corral_loaded_models", "Models loaded now (one runner each).",
                                value=float(len(scheduler.loaded) if scheduler is not None else 0))
        yield GaugeMetricFamily("corral_queue_depth", "Requests waiting for a runner or a free slot.",
                                value=float(getattr(scheduler, "pending", 0) if scheduler is not None else 0))
        info = GaugeMetricFamily("corral_build_info", "Corral's version.", labels=["version"])
        info.add_metric([__version__], 1.0)
        yield info


class _WithoutCreated(Collector):
    """The registry without the ``*_created`` series prometheus_client adds (Corral never exposed them), filtered
    here rather than with the library's process-wide ``disable_created_metrics()``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            family.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield family


class Registry:
    def __init__(self) -> None:
        self.enabled = False
        self.registry = CollectorRegistry(auto_describe=False)
        reg = self.registry
        self.requests = Counter(prometheus_client.Counter(
            "corral_requests_total", "HTTP requests by API family, route and status.",
            ("family", "route", "status"), registry=reg))
        self.latency = Histogram(prometheus_client.Histogram(
            "corral_request_duration_seconds",
            "Time from a request's arrival to the end of its response, streams included.",
            ("family", "route"), registry=reg, buckets=LATENCY_BUCKETS))
        self.ttft = Histogram(prometheus_client.Histogram(
            "corral_time_to_first_token_seconds",
            "Time from the start of a generation (model load included) to its first output.",
            ("model",), registry=reg, buckets=TTFT_BUCKETS))
        self.prompt_tokens = Counter(prometheus_client.Counter(
            "corral_prompt_tokens_total", "Prompt tokens evaluated by the engine.", ("model",), registry=reg))
        self.cached_tokens = Counter(prometheus_client.Counter(
            "corral_prompt_cached_tokens_total", "Prompt tokens served from the engine's prefix cache.", ("model",),
            registry=reg))
        self.generated_tokens = Counter(prometheus_client.Counter(
            "corral_generated_tokens_total", "Tokens generated.", ("model",), registry=reg))
        self._scrape_time = _ScrapeTime()
        reg.register(self._scrape_time)
        self._exposed = _WithoutCreated(reg)

    def attach(self, scheduler: Any) -> None:
        """Where the gauges read their values (the app's scheduler, once it exists)."""
        self._scrape_time.scheduler = scheduler

    def exposition(self) -> str:
        return prometheus_client.generate_latest(self._exposed).decode()


REGISTRY = Registry()


def configure(enabled: bool) -> Registry:
    REGISTRY.enabled = enabled
    return REGISTRY


# -- hooks (no-ops while metrics are off) --------------------------------------------------------------------------


def observe_generation(model: str, prompt_tokens: int, cached_tokens: int, generated_tokens: int) -> None:
    if not REGISTRY.enabled:
        return
    REGISTRY.prompt_tokens.inc((model,), prompt_tokens)
    REGISTRY.cached_tokens.inc((model,), cached_tokens)
    REGISTRY.generated_tokens.inc((model,), generated_tokens)


def observe_prompt_tokens(model: str, count: int) -> None:
    if REGISTRY.enabled:
        REGISTRY.prompt_tokens.inc((model,), count)


def observe_first_token(model: str, seconds: float) -> None:
    if REGISTRY.enabled:
        REGISTRY.ttft.observe((model,), seconds)


# -- the request middleware ------------------------------------------------------------------------------------------


def family_of(path: str) -> str:
    if path.startswith("/api/") or path == "/":
        return "native"
    if path.startswith("/v1/messages"):
        return "anthropic"
    if path.startswith("/v1/"):
        return "openai"
    return "other"


class MetricsMiddleware:
    """Counts every HTTP request and times it to the end of its body. Installed innermost, so it sees the status the
    exception handlers chose and the route template the router matched (``scope["route"]``)."""

    def __init__(self, app: ASGIApp, registry: Registry = REGISTRY) -> None:
        self.app = app
        self.registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/metrics":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            family = family_of(scope["path"])
            self.registry.requests.inc((family, template, str(status)))
            self.registry.latency.observe((family, template), time.perf_counter() - started)


# -- the scrape endpoint (routed only while metrics are on: off, /metrics is a 404 like any unknown path) -----------

router = APIRouter()


@router.get("/metrics", response_class=Response, summary="Prometheus metrics (CORRAL_METRICS=1)",
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                             "description": "Prometheus text exposition format 0.0.4"}})
async def scrape(request: Request) -> Response:
    REGISTRY.attach(getattr(request.app.state, "scheduler", None))
    return Response(REGISTRY.exposition(), media_type=CONTENT_TYPE)
