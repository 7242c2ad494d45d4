"""Ollama's error shape, ``{"error": "..."}``, for every failure an endpoint can meet.

The status comes from the error tree in :mod:`corral.errors` (:func:`~corral.errors.http_status`); this module only
installs the handlers that write it, plus the framework's own cases: a body that fails validation, an unknown path
or method (plain text, as Ollama's router answers), a JSON body that does not parse.
"""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from corral.api.shared import error_response, validation_message
from corral.errors import CorralError, http_status, log_unhandled

log = logging.getLogger("corral.api")


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, validation_message(exc))

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

    @app.exception_handler(CorralError)
    async def _known(_: Request, exc: CorralError) -> JSONResponse:
        return error_response(*http_status(exc))

    @app.exception_handler(Exception)
    async def _any(request: Request, exc: Exception) -> JSONResponse:
        log_unhandled(log, exc, request.url.path)
        return error_response(*http_status(exc))
