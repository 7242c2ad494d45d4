"""``POST /api/pull`` and ``POST /api/push``: registry transfers streamed as Ollama's progress objects.

As in Ollama, a bad request (no name, an invalid name, a push of an unknown model) is answered with a status code
before anything streams; once the transfer has begun, a failure is the stream's last line ``{"error": ...}`` with
status 200. ``stream: false`` returns only the last object, or the error with status 500.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict

from corral.api.shared import CorralRoute
from corral.api.streaming import collect_json, ndjson_stream
from corral.errors import APIError, InvalidModelName, ModelNotFound, RegistryError
from corral.registry.progress import Progress
from corral.registry.pull import pull_model
from corral.registry.push import push_model
from corral.store.names import parse_name
from corral.store.store import Store

router = APIRouter(route_class=CorralRoute)


class TransferRequest(BaseModel):
    """Body of ``/api/pull`` and ``/api/push`` (``username``/``password`` are accepted and ignored, as in Ollama)."""

    model_config = ConfigDict(extra="ignore")

    model: str = ""
    name: str = ""
    insecure: bool = False
    stream: bool | None = None
    username: str | None = None
    password: str | None = None


class PullRequest(TransferRequest):
    pass


class PushRequest(TransferRequest):
    pass


class ProgressResponse(BaseModel):
    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None


def _name(body: TransferRequest) -> str:
    name = body.model or body.name
    if not name:
        raise APIError(400, "model is required")
    try:
        parse_name(name)
    except InvalidModelName:
        raise APIError(400, "invalid model name") from None
    return name


async def _guarded(events: AsyncGenerator[Progress, None]) -> AsyncGenerator[Progress, None]:
    """Registry failures become Ollama's 500 ``{"error": message}``; an unknown model stays a 404."""
    try:
        async for event in events:
            yield event
    except ModelNotFound as exc:
        raise APIError(404, str(exc)) from None
    except RegistryError as exc:
        raise APIError(500, str(exc)) from None
    finally:
        await events.aclose()


async def _respond(events: AsyncGenerator[Progress, None], stream: bool | None) -> Response:
    guarded = _guarded(events)
    if stream is not False:
        async def lines() -> AsyncGenerator[str, None]:
            try:
                async for event in guarded:
                    yield json.dumps(event, separators=(",", ":")) + "\n"
            finally:  # a client that went away stops the transfer now, not when the generator is collected
                await guarded.aclose()

        return await ndjson_stream(lines())

    async def objects() -> AsyncIterator[dict[str, Any]]:
        try:
            async for event in guarded:
                yield event
        finally:
            await guarded.aclose()

    return await collect_json(objects())


def _store(request: Request) -> Store:
    return request.app.state.store  # type: ignore[no-any-return]


@router.post("/api/pull", response_model=ProgressResponse, response_model_exclude_none=True)
async def pull(request: Request, body: PullRequest) -> Response:
    name = _name(body)
    return await _respond(pull_model(_store(request), name, insecure=body.insecure), body.stream)


@router.post("/api/push", response_model=ProgressResponse, response_model_exclude_none=True)
async def push(request: Request, body: PushRequest) -> Response:
    name = _name(body)
    return await _respond(push_model(_store(request), name, insecure=body.insecure), body.stream)
