"""The built-in web chat: ``GET /ui`` and the static files it loads, shipped as package data in ``corral/ui/``.

The page is plain HTML, CSS and ES modules written for Corral: no build step, no third-party code, nothing fetched
from another origin, so it works offline. It holds no data of its own (conversations live in the browser), which is
why the API-key middleware lets these paths through and every API call the page makes still needs the key.

Every answer carries a strict Content-Security-Policy (scripts only from files of this origin, no inline script, no
connections elsewhere): the page renders text a model wrote, and a model's output is untrusted input. Files are read
once at import; each has a content-hash ``ETag`` and ``Cache-Control: no-cache``, so a browser revalidates with a
cheap ``304`` and never runs a stale script after an upgrade. The routes are left out of the OpenAPI schema: they
serve a page, not an API.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

router = APIRouter(include_in_schema=False)

PAGE = "/ui"
INDEX = "index.html"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

# img-src allows data: and blob: for the images a user attaches (shown from memory, never fetched); everything else
# comes from this origin only, and nothing may frame the page.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
       "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def _load_assets() -> dict[str, Asset]:
    assets: dict[str, Asset] = {}
    folder = importlib.resources.files("corral").joinpath("ui")
    for entry in folder.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if not entry.is_file() or suffix not in CONTENT_TYPES:
            continue
        body = entry.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        assets[entry.name] = Asset(body, CONTENT_TYPES[suffix], etag)
    return assets


ASSETS = _load_assets()

# Exactly the paths the API-key middleware lets through for GET and HEAD (corral/http/auth.py).
PUBLIC_PATHS = frozenset({PAGE, PAGE + "/"} | {f"{PAGE}/{name}" for name in ASSETS if name != INDEX})


def _serve(request: Request, asset: Asset) -> Response:
    headers = {**SECURITY_HEADERS, "ETag": asset.etag, "Cache-Control": "no-cache"}
    if asset.etag in (tag.strip() for tag in request.headers.get("if-none-match", "").split(",")):
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.content_type, headers=headers)


@router.api_route(PAGE, methods=["GET", "HEAD"])
async def page(request: Request) -> Response:
    return _serve(request, ASSETS[INDEX])


@router.api_route(PAGE + "/", methods=["GET", "HEAD"])
async def page_slash(request: Request) -> Response:
    # The page's URLs are relative to /ui; under /ui/ they would resolve one level too deep.
    return RedirectResponse("../ui", status_code=308)


@router.api_route(PAGE + "/{name}", methods=["GET", "HEAD"])
async def asset(request: Request, name: str) -> Response:
    found = ASSETS.get(name)
    if found is None or name == INDEX:
        return JSONResponse({"error": f"{PAGE}/{name} not found"}, status_code=404,
                            headers={"X-Content-Type-Options": "nosniff"})
    return _serve(request, found)
