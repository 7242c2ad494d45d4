"""Liveness and readiness probes for load balancers and orchestrators (Kubernetes, Docker, systemd watchdogs).

Ollama's ``GET /`` and ``HEAD /`` ("Ollama is running") stay as they are; clients use them to ask whether a server
is there at all. A load balancer needs two more precise questions answered:

- ``GET /healthz`` (liveness): the process answers HTTP. Failing it means "restart me".
- ``GET /readyz`` (readiness): this replica should get traffic: its start-up (bundled models seeded, store pruned)
  is done, it is not shutting down, and its model store can be read. Failing it (503) means "send requests
  elsewhere for now"; a replica that received SIGTERM fails it at once while its streams in flight finish.

Both answer ``HEAD`` too, skip the API key (like ``/``) and carry no model or path details, so they are safe to
expose to a probe. They never touch the engine: a replica busy generating is still live and ready.
"""

from __future__ import annotations

import os

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from corral.api.shared import store_of
from corral.api.streaming import shutting_down

router = APIRouter(tags=["health"])

PATHS = ("/healthz", "/readyz")


class Health(BaseModel):
    """Liveness: the process is answering."""

    status: str


class Readiness(BaseModel):
    """Readiness and each check behind it; ``status`` is ``ready`` exactly when every check holds."""

    status: str
    started: bool
    shutting_down: bool
    store_readable: bool


@router.get("/healthz", response_model=Health)
@router.head("/healthz", response_model=Health, include_in_schema=False)
async def healthz() -> Health:
    return Health(status="ok")


def _store_readable(request: Request) -> bool:
    store = store_of(request)
    try:
        os.listdir(store.root)
        if store.manifests_dir.exists():
            os.listdir(store.manifests_dir)
    except OSError:
        return False
    return True


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
@router.head("/readyz", response_model=Readiness, include_in_schema=False)
async def readyz(request: Request) -> JSONResponse:
    ready = Readiness(status="ready", started=bool(getattr(request.app.state, "ready", False)),
                      shutting_down=shutting_down(), store_readable=_store_readable(request))
    ok = ready.started and not ready.shutting_down and ready.store_readable
    if not ok:
        ready.status = "not ready"
    return JSONResponse(ready.model_dump(), status_code=200 if ok else 503)
