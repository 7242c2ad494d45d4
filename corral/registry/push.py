"""``push``: upload the blobs a registry lacks, then the manifest, with Ollama's progress objects.

Steps (Ollama's ``PushModel``): ``retrieving manifest``; per blob ``HEAD`` it (present: reported complete), else
``POST .../blobs/uploads/`` (with ``mount``/``from`` when the layer came from another model, 201 meaning mounted)
and send the bytes as ``pushing <digest[7:19]>``: one ``PUT <location>?digest=`` for a blob of one part, or
sequential ``PATCH`` chunks (``Content-Range: start-end``) and a closing ``PUT`` for larger ones, which the CNCF
distribution registry accepts in order; then ``pushing manifest`` (the stored bytes, so the registry computes the
same digest) and ``success``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from corral.errors import InvalidModelName, RegistryError, RegistryStatusError, RegistryUnreachable
from corral.registry.client import RegistryClient, with_query
from corral.registry.endpoint import resolve
from corral.registry.options import DEFAULT_OPTIONS, TransferOptions
from corral.registry.progress import Progress, blob, status
from corral.store.manifest import MEDIA_MANIFEST, Layer
from corral.store.names import parse_name
from corral.store.store import Store, canonical_digest

log = logging.getLogger("corral.registry")

_READ_CHUNK = 1 << 20


@dataclass
class _Sent:
    """Bytes of the current blob handed to the connection so far (progress of the running upload)."""

    completed: int = 0


def _file_body(path: Path, start: int, length: int, sent: _Sent) -> Callable[[], AsyncIterator[bytes]]:
    """A replayable request body: ``length`` bytes of ``path`` from ``start``, read off the event loop."""

    async def body() -> AsyncIterator[bytes]:
        sent.completed = start
        with open(path, "rb") as f:
            f.seek(start)
            left = length
            while left > 0:
                chunk = await asyncio.to_thread(f.read, min(_READ_CHUNK, left))
                if not chunk:
                    raise RegistryError("a blob changed size while it was being pushed")
                left -= len(chunk)
                sent.completed += len(chunk)
                yield chunk

    return body


def _mount_source(layer: Layer) -> str | None:
    """``<namespace>/<model>`` of the model a layer was created from, for a cross-repository mount."""
    if not layer.from_:
        return None
    try:
        source = parse_name(layer.from_)
    except InvalidModelName:
        return None
    return f"{source.namespace}/{source.model}"


async def _upload(client: RegistryClient, path: Path, layer: Layer, digest: str, sent: _Sent) -> None:
    options = client.options
    octet = {"Content-Type": "application/octet-stream"}
    failures = 0
    while True:
        try:
            location = await client.start_upload(digest, _mount_source(layer))
            if location is None:
                sent.completed = layer.size
                return
            part = options.part_size(layer.size)
            if layer.size <= part:
                headers = {**octet, "Content-Length": str(layer.size)}
                await client.send_upload("PUT", with_query(location, digest=digest), headers,
                                         _file_body(path, 0, layer.size, sent))
                return
            for offset in range(0, layer.size, part):
                length = min(part, layer.size - offset)
                headers = {**octet, "Content-Length": str(length), "Content-Range": f"{offset}-{offset + length - 1}"}
                response = await client.send_upload("PATCH", location, headers, _file_body(path, offset, length, sent))
                following = response.headers.get("docker-upload-location") or response.headers.get("location")
                if following:
                    location = response.url.join(following)
            await client.send_upload("PUT", with_query(location, digest=digest), {"Content-Length": "0"}, None)
            return
        except (RegistryUnreachable, RegistryStatusError) as exc:
            if isinstance(exc, RegistryStatusError) and exc.registry_status < 500:
                raise
            failures += 1
            if failures >= options.part_retries:
                raise RegistryError(f"pushing {digest[7:19]}: max retries exceeded: {exc}") from None
            log.info("pushing %s attempt %d failed: %s; starting over", digest[7:19], failures, exc)
            sent.completed = 0
            await asyncio.sleep(options.backoff(failures))


async def _push_blob(client: RegistryClient, store: Store, layer: Layer) -> AsyncIterator[Progress]:
    digest = canonical_digest(layer.digest)
    if store.blob_size(digest) != layer.size:
        raise RegistryError(f"blob {digest} is missing from the store or has the wrong size")
    if await client.blob_exists(digest):
        yield blob("pushing", digest, layer.size, layer.size)
        return
    sent = _Sent()
    task = asyncio.create_task(_upload(client, store.blob_path(digest), layer, digest, sent))
    try:
        last = -1
        while True:
            done, _ = await asyncio.wait({task}, timeout=client.options.progress_interval)
            if done:
                task.result()
                break
            if sent.completed != last:
                last = sent.completed
                yield blob("pushing", digest, layer.size, last)
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    yield blob("pushing", digest, layer.size, layer.size)


async def push_model(store: Store, name: str, *, insecure: bool = False,
                     options: TransferOptions = DEFAULT_OPTIONS) -> AsyncGenerator[Progress, None]:
    """Push ``name`` from ``store`` to its registry; raises ``ModelNotFound`` before the first progress object."""
    endpoint = resolve(name, insecure)
    record = store.read_manifest(endpoint.name)
    yield status("retrieving manifest")
    async with RegistryClient(endpoint, options) as client:
        seen: set[str] = set()
        for layer in record.manifest.blobs():
            if canonical_digest(layer.digest) in seen:
                continue
            seen.add(canonical_digest(layer.digest))
            async for event in _push_blob(client, store, layer):
                yield event
        yield status("pushing manifest")
        await client.put_manifest(record.raw, record.manifest.media_type or MEDIA_MANIFEST)
    yield status("success")
