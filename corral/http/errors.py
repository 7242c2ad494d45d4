"""Ollama's error shape, ``{"error": "..."}``, with Ollama's status codes, for every failure an endpoint can meet."""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from corral.http.reqlog import log_unhandled
from corral.inference.options import OptionError
from corral.inference.runner.process import RunnerError
from corral.inference.scheduler import ServerBusy
from corral.inference.service import InferenceError, RequestError
from corral.store.model import ModelError
from corral.store.names import InvalidModelName
from corral.store.store import DigestMismatch, InvalidDigest, ModelNotFound, StoreError
from corral.templates.gotemplate import TemplateError

log = logging.getLogger("corral.api")


class APIError(Exception):
    """An error with an explicit HTTP status, raised by route code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


KNOWN_ERRORS: tuple[type[Exception], ...] = (
    APIError, ModelNotFound, InvalidModelName, InvalidDigest, DigestMismatch, RequestError, TemplateError, ServerBusy,
    OptionError, InferenceError, RunnerError, ModelError, StoreError,
)


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def status_for(exc: BaseException) -> tuple[int, str]:
    """Map an internal exception to (HTTP status, message)."""
    if isinstance(exc, APIError):
        return exc.status, exc.message
    if isinstance(exc, StarletteHTTPException) and 400 <= exc.status_code < 500:
        # FastAPI's own rejections (e.g. a body that is not UTF-8: "There was an error parsing the body")
        return exc.status_code, str(exc.detail)
    if isinstance(exc, ModelNotFound):
        return 404, str(exc)
    if isinstance(exc, InvalidModelName | InvalidDigest | DigestMismatch | RequestError | TemplateError):
        return 400, str(exc)
    if isinstance(exc, ServerBusy):
        return 503, str(exc)
    if isinstance(exc, OptionError | InferenceError | RunnerError | ModelError | StoreError):
        return 500, str(exc)
    return 500, f"internal error: {type(exc).__name__}"


def _validation_message(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "invalid request"
    first = errors[0]
    if first.get("type") == "json_invalid":
        return f"invalid JSON: {first.get('ctx', {}).get('error', first.get('msg'))}"
    if first.get("type") == "missing" and tuple(first.get("loc", ())) == ("body",):
        return "missing request body"
    loc = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    return f"{loc}: {first.get('msg')}" if loc else str(first.get("msg"))


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return Response("404 page not found", status_code=404, media_type="text/plain")
        if exc.status_code == 405:
            return Response("405 method not allowed", status_code=405, media_type="text/plain")
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(json.JSONDecodeError)
    async def _json(_: Request, exc: json.JSONDecodeError) -> JSONResponse:
        return error_response(400, f"invalid JSON: {exc}")

    async def _known(_: Request, exc: Exception) -> JSONResponse:
        return error_response(*status_for(exc))

    for kind in KNOWN_ERRORS:
        app.add_exception_handler(kind, _known)

    @app.exception_handler(Exception)
    async def _any(request: Request, exc: Exception) -> JSONResponse:
        log_unhandled(log, exc, request.url.path)
        return error_response(*status_for(exc))
