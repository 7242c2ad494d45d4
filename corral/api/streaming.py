"""NDJSON streaming with Ollama's error rules.

An error before the first byte gets its HTTP status and a JSON body; after output has begun, the status stays 200 and
the stream ends with an ``{"error": ...}`` line. Stream lines are built as strings, not through pydantic, because they
are on the per-token path.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import UTC, datetime

from fastapi.responses import JSONResponse, Response, StreamingResponse

from corral.api.shared import error_response
from corral.errors import http_status

log = logging.getLogger("corral.api")

NDJSON = "application/x-ndjson"

SHUTDOWN_MESSAGE = "server shutting down"
_shutting_down = False


def begin_shutdown() -> None:
    """Called on SIGTERM/SIGINT: streams in flight end at their next token with an error line, not a cut."""
    global _shutting_down
    _shutting_down = True


def shutting_down() -> bool:
    return _shutting_down


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


async def ndjson_stream(lines: AsyncGenerator[str, None]) -> Response:
    """Start the stream only once the first line exists, so early failures keep their status code."""
    try:
        first = await anext(lines)
    except StopAsyncIteration:
        return Response(b"", media_type=NDJSON)
    except Exception as exc:  # mapped to Ollama's status codes
        await lines.aclose()
        return error_response(*http_status(exc))

    async def body() -> AsyncIterator[bytes]:
        yield first.encode()
        try:
            async for line in lines:
                yield line.encode()
                if _shutting_down:
                    yield (json.dumps({"error": SHUTDOWN_MESSAGE}) + "\n").encode()
                    return
        except Exception as exc:
            _, message = http_status(exc)
            log.warning("stream ended with error: %s", message)
            yield (json.dumps({"error": message}) + "\n").encode()
        finally:
            await lines.aclose()

    return StreamingResponse(body(), media_type=NDJSON)


async def collect_json(last: AsyncIterator[dict[str, object]]) -> JSONResponse:
    """Non-streaming: the handler folds the stream into one object; errors keep their status."""
    try:
        result: dict[str, object] = {}
        async for item in last:
            result = item
    except Exception as exc:
        return error_response(*http_status(exc))
    return JSONResponse(result)
