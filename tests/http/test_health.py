"""Liveness and readiness probes (/healthz, /readyz) and the replica header (CORRAL_REPLICA_ID -> X-Corral-Replica)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from corral.api import health
from corral.http.app import create_app
from tests.conftest import ServerProcess, running_server


@pytest.fixture
def app_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("CORRAL_NOBUNDLED", "1")
    with TestClient(create_app(models_dir=tmp_path / "models"), base_url="http://localhost") as client:
        yield client


def test_probes_answer_and_ollamas_root_is_unchanged(app_client: TestClient) -> None:
    assert app_client.get("/healthz").json() == {"status": "ok"}
    ready = app_client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "started": True, "shutting_down": False, "store_readable": True}
    assert app_client.head("/readyz").status_code == 200 and app_client.head("/healthz").status_code == 200
    root = app_client.get("/")
    assert root.status_code == 200 and root.text == "Ollama is running"


def test_not_ready_while_shutting_down(app_client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "shutting_down", lambda: True)
    ready = app_client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["status"] == "not ready" and ready.json()["shutting_down"] is True
    assert app_client.get("/healthz").status_code == 200  # still alive: it finishes its streams


def test_not_ready_before_start_up_is_done(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_NOBUNDLED", "1")
    # no `with`: the lifespan (seeding, prune) has not run
    client = TestClient(create_app(models_dir=tmp_path / "models"), base_url="http://localhost")
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["started"] is False


def test_not_ready_when_the_store_cannot_be_read(app_client: TestClient, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir(exist_ok=True)
    moved = tmp_path / "moved"
    models.rename(moved)
    models.write_text("not a directory")  # what a lost mount or a broken volume looks like to listdir
    try:
        ready = app_client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["store_readable"] is False
    finally:
        models.unlink()
        moved.rename(models)
    assert app_client.get("/readyz").status_code == 200


def test_probes_need_no_api_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_NOBUNDLED", "1")
    monkeypatch.setenv("CORRAL_API_KEY", "sekrit")
    with TestClient(create_app(models_dir=tmp_path / "models"), base_url="http://localhost") as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        assert client.get("/api/tags").status_code == 401  # everything else still needs it
        assert client.post("/readyz").status_code == 401  # only GET and HEAD are open


@pytest.mark.e2e
def test_replica_header_on_every_answer_including_the_fast_lane(tmp_path: Path) -> None:
    with running_server(tmp_path, {"CORRAL_REPLICA_ID": "replica-7", "CORRAL_NOBUNDLED": "1"}) as srv:
        with httpx.Client(base_url=srv.url, timeout=30) as client:  # keep-alive: the fast lane answers /api/tags
            answers = [client.get("/api/tags"), client.get("/api/tags"), client.get("/"), client.get("/readyz"),
                       client.post("/api/show", json={"model": "absent"})]
        assert [a.headers.get("x-corral-replica") for a in answers] == ["replica-7"] * len(answers)
        assert answers[-1].status_code == 404
        assert "replica replica-7" in srv.log_text()


@pytest.mark.e2e
def test_no_replica_header_without_an_id(server: ServerProcess) -> None:
    with server.client() as client:
        assert "x-corral-replica" not in client.get("/api/tags").headers


@pytest.mark.e2e
def test_an_unusable_replica_id_is_refused_at_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "CORRAL_"))}
    env.update({"CORRAL_REPLICA_ID": "a b\tc", "CORRAL_MODELS": str(tmp_path / "m"), "CORRAL_HOME": str(tmp_path)})
    result = subprocess.run([sys.executable, "-m", "corral", "serve"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip() == ("Error: CORRAL_REPLICA_ID must be 1 to 64 letters, digits, '.', '_', ':' or '-'")
    shutil.rmtree(tmp_path / "m", ignore_errors=True)
