"""Prometheus metrics at ``GET /metrics``, off unless ``CORRAL_METRICS`` is set.

A small registry of Corral's own (counters, histograms, and gauges read at scrape time), written in the Prometheus
text exposition format 0.0.4. It has no dependency, and costs nothing while off: every hook returns at once.

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
- ``corral_loaded_models``, ``corral_queue_depth``: runners loaded now, and requests waiting for a runner or a slot.
"""

from __future__ import annotations

import abc
import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral import __version__

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
MAX_SERIES = 2000  # per metric: label values come from model names, which clients choose

LabelValues = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: LabelValues, extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


class _Metric(abc.ABC):
    """One metric family: its header, and its sample lines (each kind keeps and renders its own values)."""

    kind = ""

    def __init__(self, name: str, help_text: str, labels: tuple[str, ...] = ()) -> None:
        self.name = name
        self.help = help_text
        self.label_names = labels
        self._lock = threading.Lock()

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    @abc.abstractmethod
    def lines(self) -> list[str]:
        """The exposition lines of every series, without the header."""


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: tuple[str, ...] = ()) -> None:
        super().__init__(name, help_text, labels)
        self._values: dict[LabelValues, float] = {}

    def inc(self, values: LabelValues = (), amount: float = 1.0) -> None:
        with self._lock:
            if values not in self._values and len(self._values) >= MAX_SERIES:
                return
            self._values[values] = self._values.get(values, 0.0) + amount

    def value(self, values: LabelValues = ()) -> float:
        return self._values.get(values, 0.0)

    def lines(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [f"{self.name}{_labels(self.label_names, v)} {_number(n)}" for v, n in items]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help_text: str, labels: tuple[str, ...], buckets: tuple[float, ...]) -> None:
        super().__init__(name, help_text, labels)
        self.buckets = buckets
        self._series: dict[LabelValues, tuple[list[int], list[float]]] = {}  # bucket counts, [sum]

    def observe(self, values: LabelValues, amount: float) -> None:
        with self._lock:
            series = self._series.get(values)
            if series is None:
                if len(self._series) >= MAX_SERIES:
                    return
                series = self._series[values] = ([0] * (len(self.buckets) + 1), [0.0])
            counts, total = series
            for i, bound in enumerate(self.buckets):
                if amount <= bound:
                    counts[i] += 1
                    break
            else:
                counts[-1] += 1
            total[0] += amount

    def lines(self) -> list[str]:
        with self._lock:
            items = sorted((v, (list(c), s[0])) for v, (c, s) in self._series.items())
        out: list[str] = []
        for values, (counts, total) in items:
            running = 0
            for bound, count in zip((*self.buckets, math.inf), counts, strict=True):
                running += count
                le = f'le="{_number(bound)}"'
                out.append(f"{self.name}_bucket{_labels(self.label_names, values, le)} {running}")
            out.append(f"{self.name}_sum{_labels(self.label_names, values)} {_number(total)}")
            out.append(f"{self.name}_count{_labels(self.label_names, values)} {running}")
        return out


class Gauge(_Metric):
    """A value read when scraped."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, read: Callable[[Any], Iterable[tuple[LabelValues, float]]],
                 labels: tuple[str, ...] = ()) -> None:
        super().__init__(name, help_text, labels)
        self.read = read
        self.source: Any = None

    def lines(self) -> list[str]:
        return [f"{self.name}{_labels(self.label_names, v)} {_number(n)}" for v, n in self.read(self.source)]


def _loaded(scheduler: Any) -> list[tuple[LabelValues, float]]:
    return [((), float(len(scheduler.loaded) if scheduler is not None else 0))]


def _queue(scheduler: Any) -> list[tuple[LabelValues, float]]:
    return [((), float(getattr(scheduler, "pending", 0) if scheduler is not None else 0))]


class Registry:
    def __init__(self) -> None:
        self.enabled = False
        self.requests = Counter("corral_requests_total", "HTTP requests by API family, route and status.",
                                ("family", "route", "status"))
        self.latency = Histogram("corral_request_duration_seconds",
                                 "Time from a request's arrival to the end of its response, streams included.",
                                 ("family", "route"), LATENCY_BUCKETS)
        self.ttft = Histogram("corral_time_to_first_token_seconds",
                              "Time from the start of a generation (model load included) to its first output.",
                              ("model",), TTFT_BUCKETS)
        self.prompt_tokens = Counter("corral_prompt_tokens_total", "Prompt tokens evaluated by the engine.",
                                     ("model",))
        self.cached_tokens = Counter("corral_prompt_cached_tokens_total",
                                     "Prompt tokens served from the engine's prefix cache.", ("model",))
        self.generated_tokens = Counter("corral_generated_tokens_total", "Tokens generated.", ("model",))
        self.loaded_models = Gauge("corral_loaded_models", "Models loaded now (one runner each).", _loaded)
        self.queue_depth = Gauge("corral_queue_depth", "Requests waiting for a runner or a free slot.", _queue)
        self.info = Gauge("corral_build_info", "Corral's version.", lambda _: [((__version__,), 1.0)],
                          ("version",))

    def attach(self, scheduler: Any) -> None:
        """Where the gauges read their values (the app's scheduler, once it exists)."""
        self.loaded_models.source = scheduler
        self.queue_depth.source = scheduler

    def metrics(self) -> list[_Metric]:
        return [self.requests, self.latency, self.ttft, self.prompt_tokens, self.cached_tokens,
                self.generated_tokens, self.loaded_models, self.queue_depth, self.info]

    def exposition(self) -> str:
        lines: list[str] = []
        for metric in self.metrics():
            lines += metric.header()
            lines += metric.lines()
        return "\n".join(lines) + "\n"


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
