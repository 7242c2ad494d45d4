"""Three replicas on one store behind nginx running the shipped deploy/nginx.conf (rendered for loopback ports by
deploy/nginx_conf.py; Debian's nginx and its njs module, installed by .ci/run).

What a client of the load balancer gets: streams pass through token by token; a conversation's second turn reaches
the replica that answered its first (affinity by the conversation's start, or by X-Corral-Session); requests
without a key spread over the replicas. With a replica killed (SIGKILL) in the middle of 200 mixed requests from
concurrent clients, no non-streaming request fails (nginx re-sends what the dead replica never answered), streams
already under way on it end in a truncated response that every HTTP client reports as an error (a dead process
writes nothing more; nginx cannot append to a body it has begun), and its models are served by the others. A replica
stopped with SIGTERM (docker stop, systemctl stop, a rolling update) ends its streams with a clean
``{"error": "server shutting down"}`` line instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import re
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.store.store import Store
from tests.conftest import MODEL, long_request
from tests.replicas import JS_MODULE, NGINX, Cluster, Nginx, check_conf, cluster, nginx, render_conf

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(
    NGINX is None or JS_MODULE is None,
    reason="nginx with its njs module is not installed (apt-get install nginx libnginx-mod-http-js; .ci/run does)")]

EMBED = "all-minilm"
REPLICA = "x-corral-replica"


@dataclass
class Deployment:
    replicas: Cluster
    lb: Nginx

    def replica_of(self, response: httpx.Response) -> str:
        return response.headers[REPLICA]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("deploy")
    with cluster(root, 3) as group:
        # Three replicas seeded the bundled models into one store at once: each model is there once, whole.
        store = Store(group.models)
        assert sorted(r.name.display_shortest() for r in store.list_models()) == ["all-minilm:latest", "smollm2:135m"]
        for record in store.list_models():
            for layer in record.manifest.blobs():
                assert store.blob_size(layer.digest) == layer.size
        assert not [p for p in store.blobs_dir.iterdir() if not p.name.startswith("sha256-") or "partial" in p.name]
        # Load both models on every replica first, so the tests below measure routing, not three cold loads.
        for replica in group.replicas.values():
            with replica.client() as client:
                assert client.post("/api/generate", json={"model": MODEL, "prompt": "hi", "stream": False,
                                                          "options": {"num_predict": 1}}).status_code == 200
                assert client.post("/api/embed", json={"model": EMBED, "input": "hi"}).status_code == 200
        with nginx(root / "nginx", [r.host for r in group.replicas.values()]) as lb:
            yield Deployment(group, lb)


def client_for(deployment: Deployment) -> httpx.Client:
    return httpx.Client(base_url=deployment.lb.url, timeout=180)


def chat(messages: list[dict[str, str]], num_predict: int = 4, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": messages, "stream": False,
            "options": {"num_predict": num_predict, "temperature": 0}, **extra}


def session_for(client: httpx.Client, replica: str, avoid: frozenset[str] = frozenset()) -> str:
    """An X-Corral-Session value that nginx's consistent hash sends to ``replica`` (asked with cheap GETs)."""
    for i in range(200):
        key = f"session-{i}"
        if key in avoid:
            continue
        if client.get("/api/version", headers={"X-Corral-Session": key}).headers[REPLICA] == replica:
            return key
    raise AssertionError(f"no session key maps to {replica}")


def test_shipped_configuration_passes_nginx_t(tmp_path: Path) -> None:
    conf = render_conf(tmp_path, ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"], "127.0.0.1:4")
    result = check_conf(conf, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_streams_pass_through_token_by_token(deployment: Deployment) -> None:
    with client_for(deployment) as client, client.stream(
            "POST", "/api/generate", json={**long_request(48), "stream": True}) as response:
        assert response.status_code == 200 and response.headers["content-type"] == "application/x-ndjson"
        chunks = [chunk for chunk in response.iter_raw() if chunk]
    lines = b"".join(chunks).splitlines()
    assert json.loads(lines[-1])["done"] is True and len(lines) >= 40
    # Buffered by nginx, ~50 lines of ~100 bytes would arrive in one or two 4-8 KiB pieces; passed through, each token
    # is its own write on the replica and (TCP coalescing aside) its own read here.
    assert len(chunks) >= len(lines) // 3, (len(chunks), len(lines))


def test_a_conversation_stays_on_its_replica(deployment: Deployment) -> None:
    firsts: set[str] = set()
    with client_for(deployment) as client:
        for i in range(6):
            messages = [{"role": "system", "content": f"You are assistant number {i}. Answer in one word."},
                        {"role": "user", "content": "Name a colour."}]
            turn1 = client.post("/api/chat", json=chat(messages))
            assert turn1.status_code == 200, turn1.text
            messages += [turn1.json()["message"], {"role": "user", "content": "And another one?"}]
            turn2 = client.post("/api/chat", json=chat(messages))
            assert turn2.status_code == 200
            assert deployment.replica_of(turn2) == deployment.replica_of(turn1), f"conversation {i} moved"
            firsts.add(deployment.replica_of(turn1))
            # OpenAI's API: the same rule, so the same replica for the same conversation
            openai = client.post("/v1/chat/completions", json={"model": MODEL, "messages": messages[:2],
                                                                "max_tokens": 2})
            assert openai.status_code == 200 and deployment.replica_of(openai) == deployment.replica_of(turn1)
        assert len(firsts) >= 2, "every conversation on one replica: the key does not tell conversations apart"

        pinned = {deployment.replica_of(client.post(
            "/api/chat", headers={"X-Corral-Session": "user-42"},
            json=chat([{"role": "user", "content": f"question {i}"}], 1))) for i in range(4)}
        assert len(pinned) == 1  # a session header wins over the body: different conversations, one replica

        spread = {deployment.replica_of(client.post("/api/embed", json={"model": EMBED, "input": f"text {i}"}))
                  for i in range(6)}
        assert len(spread) >= 2  # no key: round-robin


@dataclass
class Outcome:
    kind: str
    status: int = 0
    replica: str = ""
    ending: str = ""  # non-streaming: "ok"; streams: "done", "error-line" or "truncated"
    detail: str = ""
    finished: float = 0.0


@dataclass
class Load:
    """Mixed requests from concurrent clients, each one's outcome recorded."""

    url: str
    outcomes: list[Outcome] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, client: httpx.Client, kind: str, index: int, headers: dict[str, str] | None = None,
            body: dict[str, Any] | None = None) -> Outcome:
        outcome = Outcome(kind)
        try:
            if kind.endswith("-stream"):
                self._stream(client, kind, index, outcome, headers, body)
            else:
                self._plain(client, kind, index, outcome, headers, body)
        except httpx.HTTPError as exc:
            outcome.ending, outcome.detail = "truncated" if outcome.status else "failed", repr(exc)
        outcome.finished = time.monotonic()
        with self.lock:
            self.outcomes.append(outcome)
        return outcome

    def _plain(self, client: httpx.Client, kind: str, index: int, outcome: Outcome,
               headers: dict[str, str] | None, body: dict[str, Any] | None) -> None:
        prompt = f"Say one word about the number {index}."
        if kind == "tags":
            response = client.get("/api/tags", headers=headers)
            ok = response.status_code == 200 and {m["name"] for m in response.json()["models"]} >= {
                "smollm2:135m", "all-minilm:latest"}
        elif kind == "show":
            response = client.post("/api/show", json={"model": EMBED if index % 2 else MODEL}, headers=headers)
            ok = response.status_code == 200 and "model_info" in response.json()
        elif kind == "embed":
            response = client.post("/api/embed", json={"model": EMBED, "input": [f"text {index}", "more"]},
                                   headers=headers)
            ok = response.status_code == 200 and len(response.json()["embeddings"]) == 2
        elif kind == "chat":
            response = client.post("/api/chat", json=body or chat([{"role": "user", "content": prompt}]),
                                   headers=headers)
            ok = response.status_code == 200 and response.json()["done"] is True
        else:
            response = client.post("/api/generate", json=body or {
                "model": MODEL, "prompt": prompt, "stream": False, "options": {"num_predict": 6}}, headers=headers)
            ok = response.status_code == 200 and response.json()["done"] is True
        outcome.status, outcome.replica = response.status_code, response.headers.get(REPLICA, "")
        outcome.ending = "ok" if ok else "failed"
        outcome.detail = "" if ok else response.text[:200]

    def _stream(self, client: httpx.Client, kind: str, index: int, outcome: Outcome,
                headers: dict[str, str] | None, body: dict[str, Any] | None,
                first_line: threading.Event | None = None) -> None:
        path = "/api/chat" if kind.startswith("chat") else "/api/generate"
        request = body or (
            {**chat([{"role": "user", "content": f"Count to {index}."}], 8), "stream": True} if path == "/api/chat"
            else {"model": MODEL, "prompt": f"Count to {index}.", "options": {"num_predict": 8}})
        with client.stream("POST", path, json=request, headers=headers) as response:
            outcome.status, outcome.replica = response.status_code, response.headers.get(REPLICA, "")
            last: dict[str, Any] = {}
            for line in response.iter_lines():
                if line:
                    last = json.loads(line)
                    if first_line is not None:
                        first_line.set()
            outcome.ending = "done" if last.get("done") else "error-line" if "error" in last else "no-done"
            outcome.detail = json.dumps(last)[:200]


def mixed_requests(count: int) -> list[str]:
    kinds = (["chat"] * 3 + ["chat-stream"] * 2 + ["generate"] * 3 + ["generate-stream"] * 2 + ["embed"] * 4
             + ["tags"] * 3 + ["show"] * 3)
    rng = random.Random(21)
    return [rng.choice(kinds) for _ in range(count)]


def test_a_replica_killed_midway_fails_no_request_and_its_models_move(deployment: Deployment) -> None:
    group, lb = deployment.replicas, deployment.lb
    victim = "r2"
    survivors = {rid for rid in group.replicas if rid != victim}
    load = Load(lb.url)
    work: queue.Queue[tuple[int, str] | None] = queue.Queue()
    for item in enumerate(mixed_requests(200)):
        work.put(item)
    done_count = 0
    count_lock = threading.Lock()

    def worker() -> None:
        nonlocal done_count
        with client_for(deployment) as client:
            while True:
                item = work.get()
                if item is None:
                    return
                load.run(client, item[1], item[0])
                with count_lock:
                    done_count += 1

    workers = [threading.Thread(target=worker) for _ in range(8)]
    for _ in workers:
        work.put(None)
    for thread in workers:
        thread.start()

    # Streams and a slow non-streaming generation that are certainly on the victim when it dies.
    with client_for(deployment) as probe:
        victim_sessions = [session_for(probe, victim)]
        victim_sessions.append(session_for(probe, victim, frozenset(victim_sessions)))
    first_lines = [threading.Event() for _ in victim_sessions]
    pinned: list[Outcome] = []

    def pinned_stream(session: str, seen: threading.Event) -> None:
        outcome = Outcome("victim-stream")
        with client_for(deployment) as client:
            try:
                load._stream(client, "generate-stream", 0, outcome, {"X-Corral-Session": session},
                             {**long_request(400), "stream": True}, seen)
            except httpx.HTTPError as exc:
                outcome.ending, outcome.detail = "truncated", repr(exc)
        pinned.append(outcome)

    def pinned_plain(session: str) -> None:
        with client_for(deployment) as client:
            pinned.append(load.run(client, "generate", 0, {"X-Corral-Session": session},
                                   {**long_request(120), "stream": False}))

    while done_count < 60:
        time.sleep(0.05)
    extra = [threading.Thread(target=pinned_stream, args=(s, e)) for s, e in zip(victim_sessions, first_lines,
                                                                                 strict=True)]
    extra.append(threading.Thread(target=pinned_plain, args=(victim_sessions[0],)))
    for thread in extra:
        thread.start()
    for seen in first_lines:
        assert seen.wait(timeout=120), "the victim's streams never started"
    time.sleep(0.3)  # the slow non-streaming request, sent with the streams, is being generated on the victim too
    killed_at = time.monotonic()
    os.kill(group.replicas[victim].proc.pid, signal.SIGKILL)

    for thread in [*workers, *extra]:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in [*workers, *extra])

    assert len(load.outcomes) == 200 + 1
    plain = [o for o in load.outcomes if not o.kind.endswith("-stream")]
    failed = [o for o in plain if o.ending != "ok"]
    assert failed == [], failed  # not one non-streaming request failed
    after = [o for o in load.outcomes if o.finished > killed_at + 1]
    assert after and all(o.replica in survivors for o in after if o.replica)
    streams = [o for o in load.outcomes if o.kind.endswith("-stream")]
    for o in streams:  # a stream either finished, or was under way on the victim when it died
        assert o.ending == "done" or (o.replica == victim and o.ending in ("truncated", "no-done")), o

    slow = next(o for o in pinned if o.kind == "generate")
    assert slow.ending == "ok" and slow.replica in survivors  # re-sent by nginx after the victim died mid-request
    for o in (o for o in pinned if o.kind == "victim-stream"):
        assert o.replica == victim and o.ending == "truncated", o  # the client sees the cut, never a silent end
        assert "done" not in o.detail

    log = lb.access_log.read_text(errors="replace")
    victim_addr = group.replicas[victim].host
    assert re.search(rf"upstream={re.escape(victim_addr)}, \S+ upstream_status=502, 200 ", log), \
        "no request was retried on another replica"

    # The victim's share of keys, and its models, are served by the others now.
    with client_for(deployment) as client:
        for session in victim_sessions:
            answer = client.post("/api/chat", headers={"X-Corral-Session": session},
                                 json=chat([{"role": "user", "content": "hello"}], 2))
            vectors = client.post("/api/embed", headers={"X-Corral-Session": session},
                                  json={"model": EMBED, "input": "hello"})
            assert answer.status_code == 200 and deployment.replica_of(answer) in survivors
            assert vectors.status_code == 200 and deployment.replica_of(vectors) in survivors

    group.replace(victim)  # back to three for the next test


def test_a_replica_stopped_with_sigterm_ends_its_streams_with_an_error_line(deployment: Deployment) -> None:
    group = deployment.replicas
    victim = "r3"
    with client_for(deployment) as probe:
        session = session_for(probe, victim)
    seen = threading.Event()
    streamed = Outcome("stream")
    plain: list[Outcome] = []
    load = Load(deployment.lb.url)

    def stream() -> None:
        with client_for(deployment) as client:
            try:
                load._stream(client, "generate-stream", 0, streamed, {"X-Corral-Session": session},
                             {**long_request(400), "stream": True}, seen)
            except httpx.HTTPError as exc:
                streamed.ending, streamed.detail = "truncated", repr(exc)

    def request() -> None:
        with client_for(deployment) as client:
            plain.append(load.run(client, "chat", 1, {"X-Corral-Session": session}))

    streamer = threading.Thread(target=stream)
    streamer.start()
    assert seen.wait(timeout=120)
    asker = threading.Thread(target=request)
    asker.start()
    time.sleep(0.2)
    group.replicas[victim].proc.send_signal(signal.SIGTERM)
    streamer.join(timeout=120)
    asker.join(timeout=120)
    assert streamed.replica == victim
    assert streamed.ending == "error-line", streamed  # the body ends properly, with the reason as its last line
    assert json.loads(streamed.detail) == {"error": "server shutting down"}
    assert plain and plain[0].ending == "ok", plain  # finished by the victim, or re-sent to another replica
    with contextlib.suppress(Exception):
        group.replicas[victim].proc.wait(timeout=30)
    group.replace(victim)
