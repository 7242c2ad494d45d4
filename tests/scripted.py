"""A scripted stand-in for the inference service, for the API-shaping tests of each family: the routes run for
real (FastAPI, pydantic, streaming) while the items the service would yield are chosen by the test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

from corral.inference.request import Final, InferenceRequest, Piece


class ScriptedService:
    """Yields the given items (raising any exception among them) and records the requests it got."""

    def __init__(self, items: list[Any] | None = None) -> None:
        self.items: list[Any] = items if items is not None else []
        self.requests: list[InferenceRequest] = []

    async def generate(self, req: InferenceRequest) -> AsyncIterator[Piece | Final]:
        self.requests.append(req)
        for item in self.items:
            if isinstance(item, Exception):
                raise item
            yield item


FAKE_MODEL = SimpleNamespace(display_name="fake:latest",
                             capabilities=lambda: ["completion", "tools", "thinking", "vision"],
                             think_levels=lambda: True)
CALL = {"id": "call_abc", "function": {"index": 0, "name": "weather", "arguments": {"city": "Paris"}}}
