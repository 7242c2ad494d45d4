"""Reranking routes: ``POST /api/rerank`` (native, Ollama-style errors) and ``POST /v1/rerank`` (the Jina/Cohere
shape that RAG frameworks call, with the ``/v1`` family's OpenAI error envelope).

Ollama has no rerank endpoint yet; the native body follows the one proposed for it (``model``, ``query``,
``documents``, ``top_n``) with Ollama's usual ``keep_alive``/``options``/``truncate``. Both answer the documents best
first, each with its index in the request and the model's relevance score (a raw logit: higher is more relevant; its
scale is the model's own).
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from corral.api import schemas as s
from corral.api.openai_schemas import ErrorResponse
from corral.api.schemas import GoInt
from corral.api.shared import CorralRoute, family_route, openai_error, resolve_model, service_of, store_of
from corral.errors import APIError
from corral.inference import options
from corral.inference.rerank import Ranking
from corral.store.model import Model

# -- bodies ----------------------------------------------------------------------------------------------------------


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)  # unknown fields are ignored, as Go's are


class RerankRequest(_Request):
    """``/api/rerank``: score ``documents`` against ``query``."""

    model: str = ""
    query: str
    documents: list[str]
    top_n: GoInt | None = Field(default=None, description="keep the best N; absent or below 1: all")
    return_documents: bool = Field(default=False, description="include each document's text in its result")
    truncate: bool | None = Field(default=True, description="cut a pair that does not fit the context (else 400)")
    keep_alive: float | str | None = None
    options: dict[str, Any] | None = None


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: str | None = None


class RerankResponse(BaseModel):
    model: str
    results: list[RerankResult]
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None


class V1Document(BaseModel):
    model_config = ConfigDict(extra="ignore")
    text: str


class V1RerankRequest(_Request):
    """``/v1/rerank``, as Jina and Cohere define it; documents are strings or ``{"text": ...}`` objects."""

    model: str = ""
    query: str
    documents: list[str | V1Document]
    top_n: GoInt | None = Field(default=None, description="keep the best N; absent or below 1: all")
    return_documents: bool = Field(default=True, description="include each document as {text} (Jina's default)")


class V1RerankDocument(BaseModel):
    text: str


class V1RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: V1RerankDocument | None = None


class V1RerankUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class V1RerankResponse(BaseModel):
    id: str
    object: str = "list"
    model: str
    results: list[V1RerankResult]
    usage: V1RerankUsage


# -- shared --------------------------------------------------------------------------------------------------------


def _check(model: Model, documents: list[str]) -> None:
    if "rerank" not in model.capabilities():
        raise APIError(400, f'"{model.display_name}" does not support rerank')
    if not documents:
        raise APIError(400, "documents must be a non-empty list")


def _top(ranking: Ranking, top_n: int | None) -> list[tuple[int, float]]:
    results = ranking.results
    return results[:top_n] if top_n is not None and top_n > 0 else results


def _keep_alive(value: Any) -> float | None:
    try:
        return s.parse_keep_alive(value)
    except ValueError as exc:
        raise APIError(400, str(exc)) from None


# -- native ----------------------------------------------------------------------------------------------------------

router = APIRouter(route_class=CorralRoute)


@router.post("/api/rerank", response_model=RerankResponse, response_model_exclude_none=True,
             summary="Rerank documents by relevance to a query")
async def api_rerank(request: Request, body: RerankRequest) -> JSONResponse:
    model = resolve_model(store_of(request), body.model)
    keep_alive = _keep_alive(body.keep_alive)
    _check(model, body.documents)
    ranking = await service_of(request).rerank(model, body.query, body.documents,
                           opts=options.validate(body.options), keep_alive=keep_alive,
                           truncate=body.truncate is not False)
    results: list[dict[str, Any]] = []
    for index, score in _top(ranking, body.top_n):
        item: dict[str, Any] = {"index": index, "relevance_score": score}
        if body.return_documents:
            item["document"] = body.documents[index]
        results.append(item)
    out: dict[str, Any] = {"model": model.display_name, "results": results}
    for key in ("total_duration", "load_duration", "prompt_eval_count"):
        if getattr(ranking, key):
            out[key] = getattr(ranking, key)
    return JSONResponse(out)


# -- /v1 (Jina / Cohere) ---------------------------------------------------------------------------------------------

v1_router = APIRouter(route_class=family_route(openai_error), tags=["openai"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse}, 404: {"model": ErrorResponse}, 500: {"model": ErrorResponse},
    503: {"model": ErrorResponse},
}


@v1_router.post("/v1/rerank", response_model=V1RerankResponse, responses=_ERRORS, summary="Rerank (Jina/Cohere)")
async def v1_rerank(request: Request, body: V1RerankRequest) -> JSONResponse:
    documents = [d if isinstance(d, str) else d.text for d in body.documents]
    model = resolve_model(store_of(request), body.model)
    _check(model, documents)
    ranking = await service_of(request).rerank(model, body.query, documents, opts={}, keep_alive=None)
    results: list[dict[str, Any]] = []
    for index, score in _top(ranking, body.top_n):
        item: dict[str, Any] = {"index": index, "relevance_score": score}
        if body.return_documents:
            item["document"] = {"text": documents[index]}
        results.append(item)
    tokens = ranking.prompt_eval_count
    return JSONResponse({"id": str(uuid.uuid4()), "object": "list", "model": body.model, "results": results,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
