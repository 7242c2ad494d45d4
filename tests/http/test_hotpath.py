"""The short path for polled read-only routes (``corral/api/hotpath.py``) and the ``/api/show`` cache answer exactly
what the routed handlers answer, and never stale after the store changes."""

from __future__ import annotations

import httpx
import pytest
from conftest import MODEL, ServerProcess

pytestmark = pytest.mark.e2e


def test_hot_tags_and_version_equal_the_routed_answers(server: ServerProcess) -> None:
    with server.client() as c:
        for path in ("/api/tags", "/api/version"):
            hot = c.get(path)
            routed = c.get(path + "?via=router")  # a query string skips the short path
            assert hot.status_code == routed.status_code == 200
            assert hot.headers["content-type"] == routed.headers["content-type"] == "application/json"
            assert hot.json() == routed.json()
            head = c.head(path)
            assert head.status_code == 200 and head.content == b""
            assert int(head.headers["content-length"]) == len(hot.content)
        assert c.post("/api/tags").status_code == 405  # other methods still reach FastAPI


def _create(c: httpx.Client, name: str, system: str) -> None:
    r = c.post("/api/create", json={"model": name, "from": MODEL, "system": system, "stream": False})
    assert r.status_code == 200, r.text


def test_tags_and_show_follow_every_store_change(server: ServerProcess) -> None:
    name = "hotpath-check:latest"
    with server.client() as c:
        _create(c, name, "first system")
        assert name in [m["name"] for m in c.get("/api/tags").json()["models"]]
        assert c.post("/api/show", json={"model": name}).json()["system"] == "first system"
        _create(c, name, "second system")  # same name, new manifest: the cached show must not survive it
        assert c.post("/api/show", json={"model": name}).json()["system"] == "second system"
        verbose = c.post("/api/show", json={"model": name, "verbose": True}).json()
        assert verbose["system"] == "second system" and "tensors" in verbose
        assert c.request("DELETE", "/api/delete", json={"model": name}).status_code == 200
        assert name not in [m["name"] for m in c.get("/api/tags").json()["models"]]
        assert c.post("/api/show", json={"model": name}).status_code == 404
