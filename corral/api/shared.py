"""What every API family's routes need: the app's store and engine, and a model looked up with Ollama's errors."""

from __future__ import annotations

from fastapi import Request

from corral.http.errors import APIError
from corral.inference.service import Engine
from corral.store.model import Model, load_model
from corral.store.names import InvalidModelName
from corral.store.store import ModelNotFound, Store


def store_of(request: Request) -> Store:
    return request.app.state.store  # type: ignore[no-any-return]


def engine_of(request: Request) -> Engine:
    return request.app.state.engine  # type: ignore[no-any-return]


def resolve_model(store: Store, name: str) -> Model:
    """The model a request names: 400 when empty or invalid, 404 (Ollama's message) when absent."""
    if not name:
        raise APIError(400, "model is required")
    try:
        return load_model(store, name)
    except ModelNotFound:
        raise APIError(404, f"model '{name}' not found") from None
    except InvalidModelName:
        raise APIError(400, "invalid model name") from None
