"""A registry of the tests' own that misbehaves on request, served by uvicorn on 127.0.0.1 in a thread.

It speaks enough of the distribution protocol for pull and push (manifests, ranged blob GETs, HEAD, monolithic and
chunked uploads, a token endpoint) and can be told to fail: answer with error statuses, drop the connection after N
bytes of a blob, stall mid-blob, send wrong bytes, ignore ``Range``, demand Bearer or Basic auth (with a realm on
another host if asked), or redirect blob downloads to a second "CDN" origin. Every request is recorded, so a test
can assert what the client asked for (``Range`` offsets, whether credentials reached the CDN).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

MEDIA_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_MODEL = "application/vnd.ollama.image.model"
_RANGE_RE = re.compile(r"bytes=(\d+)-(\d*)")


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest_bytes(layers: list[tuple[str, bytes]], config: bytes) -> bytes:
    """A schemaVersion 2 manifest naming ``config`` and ``layers`` (media type, data)."""
    doc = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": digest_of(config), "size": len(config)},
        "layers": [{"mediaType": m, "digest": digest_of(d), "size": len(d)} for m, d in layers],
    }
    return json.dumps(doc, indent=3).encode()  # deliberately not Go's spelling: a pull must keep these exact bytes


@dataclass
class Seen:
    """One request the registry received."""

    method: str
    path: str
    port: int
    range: str | None
    authorization: str | None


@dataclass
class Faults:
    """What to break. Lists of statuses are consumed one per matching request."""

    manifest_status: list[int] = field(default_factory=list)
    blob_status: list[int] = field(default_factory=list)  # ranged GETs of blobs (not the HEAD)
    drop_after: int | None = None  # body bytes of a blob GET after which the connection is dropped
    drop_times: int = 0
    stall_after: int | None = None  # body bytes after which a blob GET goes silent
    stall_times: int = 0
    stall_seconds: float = 30.0
    corrupt: bool = False  # serve other bytes of the right length
    ignore_range: bool = False
    chunk_delay: float = 0.0  # pause between 16 KiB body chunks
    header_delay: float = 0.0  # pause before answering any /v2 request
    cdn_status: list[int] = field(default_factory=list)  # answers of the CDN origin (an expired signed URL: 403)


class FaultRegistry:
    """The registry state plus its servers; use :func:`serve` to run it."""

    def __init__(self) -> None:
        self.manifests: dict[tuple[str, str], bytes] = {}
        self.blobs: dict[str, bytes] = {}
        self.uploads: dict[str, bytearray] = {}
        self.faults = Faults()
        self.seen: list[Seen] = []
        self.auth: str | None = None  # None, "bearer" or "basic"
        self.users: dict[str, str] = {}  # basic credentials the registry (or its token endpoint) accepts
        self.token = "token-" + uuid.uuid4().hex
        self.realm: str | None = None  # override the realm URL in the Bearer challenge
        self.cdn: str | None = None  # base URL that blob GETs redirect to
        self.token_requests: list[Seen] = []
        self.port = 0
        self.cdn_port = 0
        self.lock = threading.Lock()
        self.app = Starlette(routes=[
            Route("/v2/", self._root, methods=["GET"]),
            Route("/v2/{ns}/{model}/manifests/{ref}", self._manifest, methods=["GET", "HEAD", "PUT"]),
            Route("/v2/{ns}/{model}/blobs/uploads/", self._upload_start, methods=["POST"]),
            Route("/v2/{ns}/{model}/blobs/uploads/{uid}", self._upload, methods=["PATCH", "PUT"]),
            Route("/v2/{ns}/{model}/blobs/{digest}", self._blob, methods=["GET", "HEAD"]),
            Route("/cdn/{digest}", self._cdn, methods=["GET"]),
            Route("/token", self._token, methods=["GET"]),
        ])

    # -- set-up helpers ---------------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def add_model(self, repo: str, tag: str, layers: list[tuple[str, bytes]], config: bytes = b'{"x":1}') -> bytes:
        raw = manifest_bytes(layers, config)
        for _, data in [*layers, ("", config)]:
            self.blobs[digest_of(data)] = data
        self.manifests[(repo, tag)] = raw
        return raw

    def blob_gets(self, digest: str | None = None) -> list[Seen]:
        """Data GETs of blobs (registry or CDN), leaving out the one-byte size probe."""
        return [s for s in self.seen if s.method == "GET" and ("/blobs/sha256" in s.path or "/cdn/" in s.path)
                and (digest is None or s.path.endswith(digest)) and s.range != "bytes=0-0"]

    def range_starts(self, digest: str) -> list[int]:
        starts = []
        for s in self.blob_gets(digest):
            match = _RANGE_RE.fullmatch(s.range or "")
            starts.append(int(match.group(1)) if match else 0)
        return starts

    # -- request handling -------------------------------------------------------------------------------------

    def _record(self, request: Request) -> None:
        with self.lock:
            self.seen.append(Seen(request.method, request.url.path, request.url.port or 0,
                                  request.headers.get("range"), request.headers.get("authorization")))

    def _challenge(self, request: Request, repo: str) -> Response | None:
        if self.auth is None:
            return None
        header = request.headers.get("authorization", "")
        if self.auth == "bearer":
            # Tokens carry the scope they were issued for; a pull token does not let a client push.
            action = "pull" if request.method in ("GET", "HEAD") else "pull,push"
            if header.startswith(f"Bearer {self.token}|") and action in header.split("|", 1)[1]:
                return None
            realm = self.realm or f"http://{self.host}/token"
            value = f'Bearer realm="{realm}",service="fault-registry",scope="repository:{repo}:{action}"'
        else:
            if header.startswith("Basic ") and self._basic_ok(header):
                return None
            value = 'Basic realm="fault-registry"'
        body = {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}
        return JSONResponse(body, status_code=401, headers={"WWW-Authenticate": value})

    def _basic_ok(self, header: str) -> bool:
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return self.users.get(user) == password

    async def _gate(self, request: Request) -> Response | None:
        self._record(request)
        if self.faults.header_delay:
            await asyncio.sleep(self.faults.header_delay)
        repo = f"{request.path_params.get('ns')}/{request.path_params.get('model')}"
        return self._challenge(request, repo)

    async def _root(self, request: Request) -> Response:
        return await self._gate(request) or JSONResponse({})

    async def _token(self, request: Request) -> Response:
        seen = Seen("GET", str(request.url), request.url.port or 0, None, request.headers.get("authorization"))
        with self.lock:
            self.token_requests.append(seen)
        if self.users:
            header = request.headers.get("authorization", "")
            if not (header.startswith("Basic ") and self._basic_ok(header)):
                return JSONResponse({"errors": [{"code": "DENIED"}]}, status_code=401)
        scope = " ".join(request.query_params.getlist("scope"))
        return JSONResponse({"token": f"{self.token}|{scope}", "expires_in": 300})

    async def _manifest(self, request: Request) -> Response:
        denied = await self._gate(request)
        if denied is not None:
            return denied
        key = (f"{request.path_params['ns']}/{request.path_params['model']}", request.path_params["ref"])
        if request.method == "PUT":
            self.manifests[key] = await request.body()
            return Response(status_code=201, headers={"Docker-Content-Digest": digest_of(self.manifests[key])})
        if self.faults.manifest_status:
            code = self.faults.manifest_status.pop(0)
            return Response(f"injected failure {code}", status_code=code)
        raw = self.manifests.get(key)
        if raw is None:
            return JSONResponse({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]},
                                status_code=404)
        return Response(raw if request.method == "GET" else b"", media_type=MEDIA_MANIFEST,
                        headers={"Content-Length": str(len(raw)), "Docker-Content-Digest": digest_of(raw)})

    async def _blob(self, request: Request) -> Response:
        denied = await self._gate(request)
        if denied is not None:
            return denied
        digest = request.path_params["digest"]
        data = self.blobs.get(digest)
        if data is None:
            return JSONResponse({"errors": [{"code": "BLOB_UNKNOWN", "message": "blob unknown"}]}, status_code=404)
        if request.method == "HEAD":
            return Response(b"", headers={"Content-Length": str(len(data))})
        if self.cdn is not None:
            return Response(status_code=307, headers={"Location": f"{self.cdn}/cdn/{digest}?signature=abc"})
        return self._serve(request, data)

    async def _cdn(self, request: Request) -> Response:
        self._record(request)
        if self.faults.cdn_status and request.headers.get("range") != "bytes=0-0":
            return Response("expired", status_code=self.faults.cdn_status.pop(0))
        data = self.blobs.get(request.path_params["digest"])
        if data is None:
            return Response(status_code=404)
        return self._serve(request, data)

    def _serve(self, request: Request, data: bytes) -> Response:
        faults = self.faults
        if request.headers.get("range") != "bytes=0-0" and faults.blob_status:
            code = faults.blob_status.pop(0)
            return Response(f"injected failure {code}", status_code=code)
        if faults.corrupt:
            data = bytes(b ^ 0xFF for b in data)
        start, end, status = 0, len(data) - 1, 200
        match = _RANGE_RE.fullmatch(request.headers.get("range", ""))
        if match and not faults.ignore_range:
            start = int(match.group(1))
            end = min(int(match.group(2)) if match.group(2) else end, len(data) - 1)
            status = 206
        headers = {"Content-Length": str(end - start + 1)}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        probe = request.headers.get("range") == "bytes=0-0"
        drop = stall = None
        if not probe and faults.drop_after is not None and faults.drop_times > 0:
            faults.drop_times -= 1
            drop = faults.drop_after
        if not probe and faults.stall_after is not None and faults.stall_times > 0:
            faults.stall_times -= 1
            stall = faults.stall_after
        body = self._body(data[start:end + 1], drop, stall)
        return StreamingResponse(body, status_code=status, headers=headers, media_type="application/octet-stream")

    async def _body(self, data: bytes, drop: int | None, stall: int | None) -> AsyncIterator[bytes]:
        sent = 0
        for pos in range(0, len(data), 16384):
            chunk = data[pos:pos + 16384]
            limit = min(x for x in (drop, stall, len(data)) if x is not None)
            if sent + len(chunk) > limit:
                yield chunk[:limit - sent]
                if stall is not None and limit == stall:
                    await asyncio.sleep(self.faults.stall_seconds)
                raise ConnectionAbortedError("injected: connection dropped")
            yield chunk
            sent += len(chunk)
            if self.faults.chunk_delay:
                await asyncio.sleep(self.faults.chunk_delay)

    async def _upload_start(self, request: Request) -> Response:
        denied = await self._gate(request)
        if denied is not None:
            return denied
        uid = uuid.uuid4().hex
        self.uploads[uid] = bytearray()
        ns, model = request.path_params["ns"], request.path_params["model"]
        return Response(status_code=202, headers={"Location": f"/v2/{ns}/{model}/blobs/uploads/{uid}?state=x",
                                                  "Docker-Upload-UUID": uid})

    async def _upload(self, request: Request) -> Response:
        denied = await self._gate(request)
        if denied is not None:
            return denied
        uid = request.path_params["uid"]
        if uid not in self.uploads:
            return Response(status_code=404)
        self.uploads[uid] += await request.body()
        if request.method == "PATCH":
            return Response(status_code=202, headers={"Location": request.url.path + "?state=y"})
        data = bytes(self.uploads.pop(uid))
        if request.query_params.get("digest") != digest_of(data):
            return JSONResponse({"errors": [{"code": "DIGEST_INVALID"}]}, status_code=400)
        self.blobs[digest_of(data)] = data
        return Response(status_code=201)


def _listen() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def serve(registry: FaultRegistry | None = None, *, cdn: bool = False) -> Iterator[FaultRegistry]:
    """Run ``registry`` (a new one by default) on a free loopback port, plus a CDN origin when asked."""
    reg = registry or FaultRegistry()
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []
    socks = [_listen() for _ in range(2 if cdn else 1)]
    reg.port = socks[0].getsockname()[1]
    if cdn:
        reg.cdn_port = socks[1].getsockname()[1]
        reg.cdn = f"http://127.0.0.1:{reg.cdn_port}"
    try:
        for sock in socks:
            config = uvicorn.Config(reg.app, log_level="critical", timeout_graceful_shutdown=1, lifespan="off")
            server = uvicorn.Server(config)
            thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
            thread.start()
            servers.append((server, thread))
        deadline = time.monotonic() + 10
        while not all(s.started for s, _ in servers):
            if time.monotonic() > deadline:
                raise RuntimeError("fault registry did not start")
            time.sleep(0.01)
        yield reg
    finally:
        for server, _ in servers:
            server.should_exit = True
        for _, thread in servers:
            thread.join(timeout=10)
        for sock in socks:
            sock.close()
