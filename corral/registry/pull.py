"""``pull``: fetch a manifest, download the blobs the store lacks, verify them, then write the manifest.

The steps and their progress objects are Ollama's ``PullModel``: ``pulling manifest``; ``pulling <digest[7:19]>``
per blob (a blob already in the store reports itself complete at once and is not fetched); ``verifying sha256
digest``; ``writing manifest`` (the registry's exact bytes, so the model's digest matches the registry's);
``removing unused layers`` when the new version dropped blobs of the old one; ``success``.

Nothing the registry sends is trusted: the manifest must parse with every digest ``sha256:<64 hex>`` before any
digest becomes a file name (CVE-2024-37032), its size is bounded, and a blob enters the store only after its sha256
matches. The manifest is written last, so a failed pull never leaves a manifest pointing at a missing blob.

Each blob is pinned (:meth:`Store.pin`) from the pull's first look at it until the manifest is written, so a delete
or a start-up prune in another process sharing the store cannot remove a blob this pull counts on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator

from corral import config
from corral.errors import ManifestError, RegistryError, RegistryNotFound, StoreError
from corral.registry import download, hf
from corral.registry.client import RegistryClient
from corral.registry.endpoint import Endpoint, resolve
from corral.registry.options import DEFAULT_OPTIONS, TransferOptions
from corral.registry.progress import Progress, blob, status
from corral.store.locks import LockFile
from corral.store.manifest import Manifest
from corral.store.names import ModelName
from corral.store.store import Store, canonical_digest

log = logging.getLogger("corral.registry")

MAX_BLOB_SIZE = 1 << 44  # 16 TiB: larger than any model file, small enough to plan parts for


def parse_manifest(raw: bytes) -> list[tuple[str, int]]:
    """The blobs a registry manifest names, as ``(sha256:<hex>, size)``, layers first, each digest once.

    Raises :class:`RegistryError` for anything malformed: bad JSON, a missing config, a digest that is not
    ``sha256:<64 hex>``, a negative, non-integer or absurd size, or one digest listed with two sizes.
    """
    try:
        manifest = Manifest.parse(raw)
    except ManifestError as exc:
        raise RegistryError(str(exc)) from None
    if manifest.schema_version != 2:
        raise RegistryError(f"unsupported manifest schemaVersion {manifest.schema_version}")
    seen: dict[str, int] = {}
    for layer in manifest.blobs():
        digest = canonical_digest(layer.digest)
        if layer.size > MAX_BLOB_SIZE:  # the part list and the sparse file are sized from it
            raise RegistryError(f"manifest lists {digest} with an implausible size {layer.size}")
        if seen.setdefault(digest, layer.size) != layer.size:
            raise RegistryError(f"manifest lists {digest} with two different sizes")
    return list(seen.items())


async def _pin(store: Store, digest: str) -> LockFile:
    """Pin a blob, waiting (without blocking the loop) while a remover in some process holds it."""
    while True:
        pin = store.pin(digest, blocking=False)
        if pin is not None:
            return pin
        await asyncio.sleep(0.01)


def _previous_blobs(store: Store, name: str) -> set[str]:
    """Blobs of the version being replaced; an unreadable old manifest just means nothing to clean up."""
    try:
        record = store.read_manifest(name)
    except StoreError:
        return set()
    return {canonical_digest(layer.digest) for layer in record.manifest.blobs()}


async def pull_model(store: Store, name: str, *, insecure: bool = False,
                     options: TransferOptions = DEFAULT_OPTIONS) -> AsyncGenerator[Progress, None]:
    """Pull ``name`` into ``store``, yielding Ollama's progress objects; failures raise :class:`RegistryError`."""
    endpoint = resolve(name, insecure)
    target = store.existing_name(endpoint.name)
    previous = _previous_blobs(store, target.display_long())

    yield status("pulling manifest")
    pins: list[LockFile] = []
    try:
        async for event in _fetch_and_write(store, endpoint, target, previous, options, pins):
            yield event
    finally:
        for pin in pins:
            pin.release_and_tidy()


async def _fetch_and_write(store: Store, endpoint: Endpoint, target: ModelName, previous: set[str],
                           options: TransferOptions, pins: list[LockFile]) -> AsyncGenerator[Progress, None]:
    held: list[download.BlobDownload] = []
    try:
        async with RegistryClient(endpoint, options) as client:
            try:
                raw = await client.get_manifest()
                blobs = parse_manifest(raw)
            except RegistryNotFound:
                raise RegistryError("pull model manifest: file does not exist"
                                    + hf.hint(endpoint.name, 404)) from None
            except RegistryError as exc:
                raise RegistryError(f"pull model manifest: {exc}") from None

            for digest, size in blobs:
                pins.append(await _pin(store, digest))
                if store.blob_size(digest) == size:
                    yield blob("pulling", digest, size, size)
                    continue
                job = await download.acquire(store, endpoint, digest, size, options, client.token)
                held.append(job)
                try:
                    async for completed in job.watch():
                        yield blob("pulling", digest, size, completed)
                except RegistryNotFound:
                    raise RegistryError(f"pulling {digest[7:19]}: blob {digest} is not in the registry "
                                        "(file does not exist)") from None

        yield status("verifying sha256 digest")
        for job in held:  # each blob was hashed and placed as its fetch ended; a mismatch was raised there
            await job.verify()
    finally:
        for job in held:
            download.release(job)

    yield status("writing manifest")
    store.write_manifest_bytes(target, raw)

    unused = previous - {digest for digest, _ in blobs}
    if unused and not config.noprune():
        yield status("removing unused layers")
        store.remove_unreferenced(unused)
    yield status("success")
