"""The ASGI application: routes of every API family over one store and one inference service."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from corral import __version__, config, metrics
from corral.api import anthropic, create, health, native, openai, responses, transfer, ui
from corral.api import rerank as rerank_api
from corral.authoring import bundled
from corral.http import auth, errors, fastlane, hotpath, reqlog, security
from corral.http.middleware import AssumeJSONBody, CatchAll
from corral.inference.runner.process import remove_stale_socket_dirs
from corral.inference.scheduler import Scheduler
from corral.inference.service import InferenceService
from corral.store.store import Store

log = logging.getLogger("corral.http.server")

# Ollama's CORS header list, so browser clients of the OpenAI SDK work.
ALLOWED_HEADERS = [
    "Authorization", "Content-Type", "User-Agent", "Accept", "X-Requested-With", "OpenAI-Beta",
    "X-Api-Key",  # Corral's: the header the Anthropic SDK carries CORRAL_API_KEY in
    *(f"x-stainless-{h}" for h in ("arch", "async", "custom-poll-interval", "helper-method", "lang", "os",
                                   "package-version", "poll-helper", "retry-count", "runtime", "runtime-version",
                                   "timeout")),
]


def create_app(models_dir: Path | None = None, bind: config.HostPort | None = None) -> FastAPI:
    store = Store(models_dir or config.models_dir())
    bind = bind or config.host()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        remove_stale_socket_dirs()  # what a killed server's runners left in /tmp
        scheduler = Scheduler()
        app.state.scheduler = scheduler
        app.state.service = InferenceService(scheduler)
        if not config.env_bool("NOBUNDLED"):
            bundled.seed(store)
        if not config.noprune():
            try:
                store.prune()
            except Exception as exc:  # pruning is housekeeping; never fatal
                log.warning("prune skipped: %s", exc)
        app.state.ready = True  # /readyz: start-up done
        try:
            yield
        finally:
            await scheduler.shutdown()

    app = FastAPI(title="Corral", version=__version__, lifespan=lifespan,
                  description="Ollama-compatible local LLM runtime")
    app.state.store = store
    registry = metrics.configure(config.env_bool("METRICS"))
    # The protocol-level lane for polled GETs (``corral serve`` installs it): only where no middleware would add
    # anything to those answers.
    app.state.fast_lane = (None if registry.enabled or config.api_key() is not None or config.env_bool("NOFASTLANE")
                           else fastlane.FastLane(store, check_host=bind.is_loopback))
    # Starlette runs the last-added middleware first: request log, Host check, Origin check, CORS, API key, then
    # body rules.
    app.add_middleware(CatchAll)  # innermost of all: no exception reaches the server (it would drop the connection)
    app.add_middleware(hotpath.HotPath, store=store)  # polled read-only routes skip FastAPI
    if registry.enabled:  # innermost: it sees the route matched and the status the error handlers chose
        app.add_middleware(metrics.MetricsMiddleware, registry=registry)
    app.add_middleware(AssumeJSONBody)
    app.add_middleware(security.BodyLimit, limit=security.max_body())
    app.add_middleware(auth.APIKeyAuth, key=config.api_key())
    app.add_middleware(
        CORSMiddleware,
        allow_origin_regex=security.origin_regex(security.allowed_origins()),
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
        allow_headers=ALLOWED_HEADERS,
    )
    app.add_middleware(security.OriginCheck, origins=security.allowed_origins())
    app.add_middleware(security.HostCheck, enabled=bind.is_loopback)
    app.add_middleware(reqlog.RequestLog)
    errors.install(app)
    app.include_router(native.router)
    app.include_router(health.router)
    app.include_router(openai.router)
    app.include_router(responses.router)
    app.include_router(anthropic.router)
    app.include_router(create.router)
    app.include_router(transfer.router)
    app.include_router(rerank_api.router)
    app.include_router(rerank_api.v1_router)
    app.include_router(ui.router)
    if registry.enabled:
        app.include_router(metrics.router)
    return app
