"""The ASGI application: routes of every API family over one store, scheduler and engine."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from corral import __version__, bundled, config
from corral.api import anthropic, errors, native, openai
from corral.api.middleware import AssumeJSONBody
from corral.generation import Engine
from corral.scheduler import Scheduler
from corral.store.store import Store

log = logging.getLogger("corral.server")


def create_app(models_dir: Path | None = None) -> FastAPI:
    store = Store(models_dir or config.models_dir())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        scheduler = Scheduler()
        app.state.scheduler = scheduler
        app.state.engine = Engine(scheduler)
        if not config.env_bool("NOBUNDLED"):
            bundled.seed(store)
        if not config.noprune():
            try:
                store.prune()
            except Exception as exc:  # pruning is housekeeping; never fatal
                log.warning("prune skipped: %s", exc)
        try:
            yield
        finally:
            await scheduler.shutdown()

    app = FastAPI(title="Corral", version=__version__, lifespan=lifespan,
                  description="Ollama-compatible local LLM runtime")
    app.state.store = store
    app.add_middleware(AssumeJSONBody)
    errors.install(app)
    app.include_router(native.router)
    app.include_router(openai.router)
    app.include_router(anthropic.router)
    return app
