"""One blob's download: ranged parts fetched in parallel into ``blobs/sha256-<hex>-partial``, resumable, shared.

The layout is Ollama's, so either program can resume the other's download: the data goes to
``sha256-<hex>-partial`` (a sparse file of the blob's full size) and each part's progress to
``sha256-<hex>-partial-<N>`` as ``{"N","Offset","Size","Completed"}``. Bytes are written before the progress that
claims them, and progress is saved every fraction of a second, so an interrupted pull, a cancelled request or a
killed server resumes from what arrived. The blob enters the store only through :meth:`BlobDownload.verify`: the
partial file is hashed and renamed into place when its sha256 is the digest, and deleted when it is not.

Pulls of the same digest in one server share one download; when the last of them goes away the download stops
(its progress stays on disk for the next pull). Across processes sharing the store (replicas), the blob's download
lock (:mod:`corral.store.locks`) lets one process at a time fetch, verify and place a blob; a second process pulling
it waits, reporting the first one's progress from its part-state files, and finds the blob in place. The verify runs
right after the fetch, still under that lock, so a process never holds one blob's lock while it waits for another's.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from corral.errors import RegistryError, RegistryStatusError, TransferDigestMismatch
from corral.registry.client import RegistryClient, describe
from corral.registry.endpoint import Endpoint
from corral.registry.options import TransferOptions
from corral.store.store import Store

log = logging.getLogger("corral.registry")

_CONTENT_RANGE_RE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_HASH_CHUNK = 4 << 20
_RETRY_STATUSES = (408, 425, 429)


@dataclass
class Part:
    """A byte range of the blob and how much of it is on disk."""

    n: int
    offset: int
    size: int
    completed: int = 0
    dirty: bool = False

    @property
    def start(self) -> int:
        return self.offset + self.completed

    @property
    def stop(self) -> int:
        """One past the last byte."""
        return self.offset + self.size

    def state(self) -> bytes:
        return json.dumps({"N": self.n, "Offset": self.offset, "Size": self.size, "Completed": self.completed},
                          separators=(",", ":")).encode() + b"\n"


class ShortBody(Exception):
    """The server ended a range early (a dropped connection); the part resumes from where it stopped."""


class BlobDownload:
    """A blob being fetched for one or more pulls."""

    def __init__(self, store: Store, endpoint: Endpoint, digest: str, size: int, options: TransferOptions,
                 token: str) -> None:
        self.store = store
        self.endpoint = endpoint
        self.digest = digest
        self.total = size
        self.options = options
        self.token = token
        self.path = store.blob_path(digest)
        self.partial = self.path.with_name(self.path.name + "-partial")
        self.parts: list[Part] = []
        self.completed = 0
        self.refs = 0
        self.abandoned = False
        self.url = endpoint.url("blobs", digest)  # replaced by the CDN's URL when the registry redirects
        self.fetch: asyncio.Task[None] | None = None
        self.key = (id(asyncio.get_running_loop()), str(store.root), digest)

    @property
    def short(self) -> str:
        return self.digest[7:19]

    # -- part state on disk -----------------------------------------------------------------------------------

    def _state_path(self, n: int) -> Path:
        return self.partial.with_name(f"{self.partial.name}-{n}")

    def _state_files(self) -> list[Path]:
        pattern = re.compile(re.escape(self.partial.name) + r"-\d+")
        try:
            names = os.listdir(self.partial.parent)
        except OSError:
            return []
        return [self.partial.parent / n for n in names if pattern.fullmatch(n)]

    def _load_parts(self) -> list[Part] | None:
        """Parts saved by an earlier attempt, when they describe this blob consistently; else ``None``."""
        files = self._state_files()
        if not files:
            return None
        parts = []
        for path in files:
            try:
                with open(path, "rb") as f:
                    doc = json.loads(f.read(4096))
                part = Part(int(doc["N"]), int(doc["Offset"]), int(doc["Size"]), int(doc["Completed"]))
            except (OSError, ValueError, KeyError, TypeError):
                return None
            parts.append(part)
        parts.sort(key=lambda p: p.n)
        offset = 0
        for i, part in enumerate(parts):
            if part.n != i or part.offset != offset or part.size <= 0 or not 0 <= part.completed <= part.size:
                return None
            offset += part.size
        try:
            on_disk = os.stat(self.partial).st_size
        except OSError:
            return None
        if offset != self.total or on_disk != self.total:
            return None
        return parts

    def _new_parts(self) -> list[Part]:
        size = self.options.part_size(self.total)
        parts: list[Part] = []
        offset = 0
        while offset < self.total:
            length = min(size, self.total - offset)
            parts.append(Part(len(parts), offset, length, dirty=True))
            offset += length
        return parts

    def _discard(self) -> None:
        for path in [self.partial, *self._state_files()]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def _prepare(self) -> None:
        """Resume from saved parts, or start afresh with a sparse file of the blob's size."""
        self.store.blobs_dir.mkdir(parents=True, exist_ok=True)
        parts = self._load_parts()
        if parts is None:
            self._discard()
            parts = self._new_parts()
            fd = os.open(self.partial, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.ftruncate(fd, self.total)
            finally:
                os.close(fd)
        else:
            done = sum(p.completed for p in parts)
            log.info("resuming %s at %d of %d bytes", self.short, done, self.total)
        self.parts = parts
        self.completed = sum(p.completed for p in parts)
        self._save_states()

    def _save_states(self) -> None:
        for part in self.parts:
            if part.dirty:
                part.dirty = False
                with open(self._state_path(part.n), "wb") as f:
                    f.write(part.state())

    async def _save_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.state_interval)
            self._save_states()

    # -- fetching ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        self.fetch = asyncio.create_task(self._run(), name=f"pull-{self.short}")
        self.fetch.add_done_callback(self._fetched)

    def _fetched(self, task: asyncio.Task[None]) -> None:
        _forget(self)  # placed or failed: the next pull starts from the store and the files on disk

    async def _run(self) -> None:
        lock = self.store.download_lock(self.digest)
        while not lock.acquire(blocking=False):  # another process is fetching this blob: follow its progress
            self.completed = max(self.completed, self._progress_on_disk())
            await asyncio.sleep(self.options.progress_interval)
        try:
            if self.store.blob_size(self.digest) == self.total:  # the other process placed it
                self.completed = self.total
                return
            await self._download()
            await asyncio.to_thread(self._hash_and_place)
        finally:
            lock.release(remove=True)

    def _progress_on_disk(self) -> int:
        """Bytes another process's download of this blob has on disk, from its part-state files."""
        done = 0
        for path in self._state_files():
            try:
                with open(path, "rb") as f:
                    done += int(json.loads(f.read(4096))["Completed"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return min(done, self.total)

    async def _download(self) -> None:
        client = RegistryClient(self.endpoint, self.options, token=self.token)
        fd: int | None = None
        saver: asyncio.Task[None] | None = None
        try:
            try:
                await asyncio.to_thread(self._prepare)
                fd = os.open(self.partial, os.O_RDWR)
            except OSError as exc:
                raise RegistryError(f"cannot write blob {self.digest}: {exc.strerror}") from None
            pending = [p for p in self.parts if p.completed < p.size]
            if not pending:
                return
            await self._locate(client)
            log.info("downloading %s in %d part(s) from %s", self.short, len(pending), self.url.host)
            saver = asyncio.create_task(self._save_loop())
            semaphore = asyncio.Semaphore(max(1, self.options.parts))
            tasks = [asyncio.create_task(self._fetch_part(client, fd, p, semaphore)) for p in pending]
            try:
                await asyncio.gather(*tasks)
            except BaseException:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
        finally:
            if saver is not None:
                saver.cancel()
                await asyncio.gather(saver, return_exceptions=True)
            with contextlib.suppress(OSError):
                self._save_states()
            if fd is not None:
                os.close(fd)
            await client.aclose()

    async def _locate(self, client: RegistryClient) -> None:
        """Find where the bytes are served (the registry or its CDN) and check the size the server reports."""
        self.url, reported = await client.blob_location(self.digest, self.total)
        if reported is not None and reported != self.total:
            raise RegistryError(f"blob {self.digest} is {reported} bytes in the registry, "
                                f"but the manifest says {self.total}")

    async def _fetch_part(self, client: RegistryClient, fd: int, part: Part, semaphore: asyncio.Semaphore) -> None:
        """Fetch one part, retrying dropped connections and 5xx answers with backoff and re-requesting stalls.

        Failures are counted per part and the count starts over whenever an attempt made progress; stalls are
        counted separately and never start over, so a trickle cannot hold a pull forever. Either limit reached
        ends the pull (what arrived stays on disk for the next one).
        """
        async with semaphore:
            failures = stalls = 0
            while part.completed < part.size:
                before = part.completed
                try:
                    await self._fetch_range(client, fd, part)
                    if part.completed < part.size:
                        raise ShortBody(f"connection closed after {part.completed - before} bytes")
                except httpx.ReadTimeout:
                    stalls += 1
                    log.info("%s part %d stalled; retrying", self.short, part.n)
                    if stalls > self.options.max_stalls:
                        raise RegistryError(
                            f"pulling {self.short}: the download stalled {stalls} times "
                            f"(no data for {self.options.stall_timeout:g} s each)") from None
                except (httpx.TransportError, ShortBody) as exc:
                    failures = self._failed(part, before, failures, exc)
                    await asyncio.sleep(self.options.backoff(failures))
                except RegistryStatusError as exc:
                    # A CDN's signed URL can expire during a long download: ask the registry for a fresh one.
                    expired = exc.registry_status in (401, 403, 404, 410) and not client.same_origin(self.url)
                    if exc.registry_status < 500 and exc.registry_status not in _RETRY_STATUSES and not expired:
                        raise
                    failures = self._failed(part, before, failures, exc)
                    await asyncio.sleep(self.options.backoff(failures))
                    if expired:
                        await self._locate(client)
                except OSError as exc:
                    raise RegistryError(f"cannot write blob {self.digest}: {exc.strerror}") from None

    def _failed(self, part: Part, before: int, failures: int, exc: BaseException) -> int:
        failures = 1 if part.completed > before else failures + 1
        text = describe(exc) if isinstance(exc, httpx.HTTPError) else str(exc)
        log.info("%s part %d attempt %d failed: %s", self.short, part.n, failures, text)
        if failures >= self.options.part_retries:
            raise RegistryError(f"pulling {self.short}: max retries exceeded: {text}")
        return failures

    async def _fetch_range(self, client: RegistryClient, fd: int, part: Part) -> None:
        start = part.start
        async with client.open_range(self.url, start, part.stop - 1) as response:
            skip = 0
            if response.status_code == 206:
                match = _CONTENT_RANGE_RE.fullmatch(response.headers.get("content-range", "").strip())
                if match is None or int(match.group(1)) != start:
                    raise RegistryError(f"pulling {self.short}: the registry sent a range that was not asked for")
            elif response.status_code == 200:
                skip = start  # Range ignored: the body starts at byte 0
            else:
                raise RegistryError(f"pulling {self.short}: unexpected answer {response.status_code}")
            pos = start
            async for chunk in response.aiter_bytes():
                if skip:
                    if len(chunk) <= skip:
                        skip -= len(chunk)
                        continue
                    chunk, skip = chunk[skip:], 0
                room = part.stop - pos
                view = memoryview(chunk)[:room]
                while len(view):
                    written = os.pwrite(fd, view, pos)
                    view = view[written:]
                    pos += written
                    part.completed += written
                    self.completed += written
                    part.dirty = True
                if part.completed >= part.size:
                    return

    async def watch(self) -> AsyncIterator[int]:
        """Bytes on disk, every ``progress_interval`` while the fetch runs; re-raises the fetch's error at the end."""
        assert self.fetch is not None
        last = -1
        while True:
            done, _ = await asyncio.wait({self.fetch}, timeout=self.options.progress_interval)
            if self.completed != last:
                last = self.completed
                yield last
            if done:
                break
        self.fetch.result()

    # -- verification -----------------------------------------------------------------------------------------

    async def verify(self) -> None:
        """Wait for the blob to be in the store: the fetch task hashes the partial file and moves it into place
        as soon as its bytes are in (shared by every pull waiting on it); re-raises its error, a mismatch included."""
        assert self.fetch is not None
        await asyncio.shield(self.fetch)

    def _hash_and_place(self) -> None:
        hasher = hashlib.sha256()
        size = 0
        try:
            with open(self.partial, "rb") as f:
                for chunk in iter(lambda: f.read(_HASH_CHUNK), b""):
                    hasher.update(chunk)
                    size += len(chunk)
                os.fsync(f.fileno())
        except OSError as exc:
            raise RegistryError(f"cannot read the download of {self.digest}: {exc.strerror}") from None
        got = "sha256:" + hasher.hexdigest()
        if got != self.digest or size != self.total:
            self._discard()
            raise TransferDigestMismatch(self.digest, got)
        try:
            os.chmod(self.partial, 0o644)
            os.replace(self.partial, self.path)
        except OSError as exc:
            raise RegistryError(f"cannot store blob {self.digest}: {exc.strerror}") from None
        with contextlib.suppress(OSError):
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        for path in self._state_files():
            with contextlib.suppress(OSError):
                os.unlink(path)

    async def settled(self) -> None:
        """Wait until this download no longer touches its files (after a cancel)."""
        if self.fetch is not None:
            await asyncio.wait({self.fetch})


_active: dict[tuple[int, str, str], BlobDownload] = {}


def _forget(download: BlobDownload) -> None:
    if _active.get(download.key) is download:
        del _active[download.key]


async def acquire(store: Store, endpoint: Endpoint, digest: str, size: int, options: TransferOptions,
                  token: str) -> BlobDownload:
    """The running download of ``digest`` into ``store``, joined, or a new one started; hold it until the blob is
    verified (or the pull fails) and then :func:`release` it."""
    key = (id(asyncio.get_running_loop()), str(store.root), digest)
    while True:
        current = _active.get(key)
        if current is None:
            break
        if current.abandoned or current.total != size:
            await current.settled()
            _forget(current)
            continue
        current.refs += 1
        return current
    download = BlobDownload(store, endpoint, digest, size, options, token)
    download.refs = 1
    _active[key] = download
    download.start()
    return download


def release(download: BlobDownload) -> None:
    """Drop one pull's interest. The last one out stops a fetch still running; the next pull resumes from the
    files."""
    download.refs -= 1
    if download.refs > 0:
        return
    if download.fetch is not None and not download.fetch.done():
        download.abandoned = True
        download.fetch.cancel()
    else:
        _forget(download)
