"""Model authoring routes: ``POST /api/create`` and ``HEAD|POST /api/blobs/{digest}``.

A client uploads the files a Modelfile names as blobs (``HEAD`` first to skip those the server has), then sends
``/api/create`` with a ``files`` map that refers to them by digest. Request checks run before the first byte, so
bad input is a 4xx with Ollama's ``{"error"}`` body; the work then streams Ollama's progress lines.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import iterate_in_threadpool

from corral.api.schemas import Message
from corral.api.shared import CorralRoute
from corral.api.streaming import collect_json, ndjson_stream
from corral.authoring import CreateSpec, Creator
from corral.errors import APIError, CreateError, InvalidDigest
from corral.store.store import Store, canonical_digest

router = APIRouter(route_class=CorralRoute)


class CreateRequest(BaseModel):
    """Ollama's ``api.CreateRequest`` (the current JSON form; the Modelfile is read by the client)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    model: str = ""
    name: str = Field("", description="deprecated spelling of model")
    from_: str = Field("", alias="from")
    files: dict[str, str] | None = None
    adapters: dict[str, str] | None = None
    template: str = ""
    system: str = ""
    parameters: dict[str, Any] | None = None
    messages: list[Message] | None = None
    license: str | list[str] | None = None
    quantize: str = ""
    quantization: str = Field("", description="deprecated spelling of quantize")
    renderer: str = ""
    parser: str = ""
    requires: str = ""
    draft_files: dict[str, str] | None = None
    stream: bool | None = None


def _store(request: Request) -> Store:
    return request.app.state.store  # type: ignore[no-any-return]


def _spec(body: CreateRequest) -> CreateSpec:
    licenses = [body.license] if isinstance(body.license, str) else list(body.license or [])
    return CreateSpec(
        model=body.model or body.name,
        from_=body.from_,
        files=body.files,
        adapters=body.adapters,
        template=body.template,
        system=body.system,
        parameters=body.parameters,
        messages=[m.model_dump(exclude_none=True) for m in body.messages or []],
        license=licenses,
        quantize=body.quantize or body.quantization,
        renderer=body.renderer,
        parser=body.parser,
        requires=body.requires,
        draft_files=body.draft_files,
    )


async def _progress(creator: Creator) -> AsyncGenerator[dict[str, Any], None]:
    """The pipeline's progress objects, each step run in a worker thread; failures become APIErrors."""
    try:
        async for event in iterate_in_threadpool(creator.run()):
            yield event
    except CreateError as exc:
        raise APIError(exc.status, exc.message) from None


@router.post("/api/create")
async def create(request: Request, body: CreateRequest) -> Response:
    creator = Creator(_store(request), _spec(body))
    try:
        await anyio.to_thread.run_sync(creator.prepare)
    except CreateError as exc:
        raise APIError(exc.status, exc.message) from None

    if body.stream is not False:
        async def lines() -> AsyncGenerator[str, None]:
            async for event in _progress(creator):
                yield json.dumps(event, separators=(",", ":")) + "\n"

        return await ndjson_stream(lines())

    async def last() -> AsyncIterator[dict[str, object]]:
        async for event in _progress(creator):
            yield event

    return await collect_json(last())


def _digest(value: str) -> str:
    try:
        return canonical_digest(value)
    except InvalidDigest:
        raise APIError(400, "invalid digest format") from None


@router.head("/api/blobs/{digest}")
async def blob_exists(request: Request, digest: str) -> Response:
    """200 when the server has the blob, else 404 (Ollama's ``HeadBlobHandler``)."""
    found = _store(request).has_blob(_digest(digest))
    return Response(status_code=200 if found else 404)


@router.post("/api/blobs/{digest}")
async def upload_blob(request: Request, digest: str) -> Response:
    """Store the request body as a blob if it hashes to ``digest``: 201 when stored, 200 when it was already
    there (the body is not read), 400 on a mismatch (nothing is kept)."""
    store = _store(request)
    expected = _digest(digest)
    if store.has_blob(expected):
        return Response(status_code=200)
    body = request.stream()

    async def next_chunk() -> bytes | None:
        return await anext(body, None)

    def chunks() -> Iterator[bytes]:
        # runs in a worker thread; each chunk is read on the event loop
        while (chunk := anyio.from_thread.run(next_chunk)) is not None:
            yield chunk

    await anyio.to_thread.run_sync(lambda: store.write_blob(chunks(), expected))
    return Response(status_code=201)
