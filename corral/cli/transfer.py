"""``pull``, ``push`` and ``create``: stream the server's progress objects into live bars on stderr.

Each follows the matching Ollama handler: a bar per layer digest (labelled by the server's status, or
``pulling <12 hex>``), a spinner per status line without a digest (``pulling manifest``, ``writing manifest``,
``success``). The server does the work; these functions only draw it and turn failures into :class:`ClientError`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress, ProgressColumn, Task, TaskID
from rich.text import Text

from corral.cli.client import Client
from corral.cli.modelfile import build_plan, parse
from corral.cli.progress import bar_line, spinner_line


class _LineColumn(ProgressColumn):
    """Renders a whole task line, bar or spinner, in Ollama's layout at the console's current width."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self._console = console

    def render(self, task: Task) -> Text:
        if task.fields.get("kind") == "spinner":
            running = bool(task.fields.get("running"))
            return Text(spinner_line(task.description, running, int(time.monotonic() * 10)), no_wrap=True,
                        overflow="crop")
        total = int(task.total or 0)
        completed = int(task.completed)
        line = bar_line(task.description, total, completed, max(self._console.width, 20), task.speed, completed < total)
        return Text(line, no_wrap=True, overflow="crop")  # a narrow terminal loses trailing columns, not lines


class TransferProgress:
    """Turns a progress stream (``{status, digest, total, completed}``) into bars and spinners, following
    Ollama's Pull/Push/Create handlers."""

    def __init__(self, verb: str = "pulling", *, console: Console | None = None, skip_empty_start: bool = False):
        self.verb = verb
        self.skip_empty_start = skip_empty_start
        self.console = console or Console(stderr=True, highlight=False)
        self._progress = Progress(_LineColumn(self.console), console=self.console, refresh_per_second=10)
        self._bars: dict[str, TaskID] = {}
        self._spinner: TaskID | None = None
        self._status: str | None = None
        self._started = False
        self._lock = threading.Lock()

    def __enter__(self) -> TransferProgress:
        if not self._started:
            self._progress.start()
            self._started = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            self._stop_spinner()
            self._progress.stop()
            self._started = False

    def _stop_spinner(self) -> None:
        if self._spinner is not None:
            self._progress.update(self._spinner, running=False)
            self._spinner = None

    def spinner(self, message: str) -> TaskID:
        """Start a status line without a size, stopping the previous one (its frame disappears)."""
        with self._lock:
            self._stop_spinner()
            self._spinner = self._progress.add_task(message, total=None, kind="spinner", running=True)
            self._status = message
            return self._spinner

    def side_spinner(self, message: str) -> TaskID:
        """A status line that runs alongside others (one per blob being uploaded)."""
        return self._progress.add_task(message, total=None, kind="spinner", running=True)

    def set_message(self, task: TaskID, message: str, *, running: bool = True) -> None:
        self._progress.update(task, description=message, running=running)

    def update(self, event: Mapping[str, Any]) -> None:
        status = str(event.get("status") or "")
        digest = str(event.get("digest") or "")
        with self._lock:
            if digest:
                self._stop_spinner()
                total = int(event.get("total") or 0)
                completed = int(event.get("completed") or 0)
                task = self._bars.get(digest)
                if task is None:
                    if self.skip_empty_start and completed == 0:
                        return
                    label = status or f"{self.verb} {digest.removeprefix('sha256:')[:12]}"
                    task = self._progress.add_task(label, total=total, completed=0, kind="bar")
                    self._bars[digest] = task
                self._progress.update(task, total=total, completed=min(completed, total) if total else completed)
                return
        if status and status != self._status:
            self.spinner(status)


def pull(client: Client, model: str, *, insecure: bool = False) -> None:
    """``corral pull``; also used by ``run`` when the model is missing."""
    with TransferProgress("pulling", skip_empty_start=True) as progress:
        for event in client.pull(model, insecure=insecure):
            progress.update(event)


def _parse_name(name: str) -> tuple[str, str, str, str]:
    """``[host/][namespace/]model[:tag]`` with Ollama's defaults (registry.ollama.ai, library, latest)."""
    base, tag = name, "latest"
    colon, slash = name.rfind(":"), name.rfind("/")
    if colon > slash:
        base, tag = name[:colon], name[colon + 1 :]
    parts = base.split("/")
    model = parts[-1]
    namespace = parts[-2] if len(parts) >= 2 else "library"
    host = "/".join(parts[:-2]) if len(parts) >= 3 else "registry.ollama.ai"
    return host, namespace, model, tag


def push_destination(name: str) -> str:
    """Where ``push`` says the model went: an ollama.com page, or the full registry name."""
    host, namespace, model, tag = _parse_name(name)
    if host.endswith((".ollama.ai", ".ollama.com")):
        short = model if namespace == "library" else f"{namespace}/{model}"
        return "https://ollama.com/" + (short if tag == "latest" else f"{short}:{tag}")
    return f"{host}/{namespace}/{model}:{tag}"


def push(client: Client, model: str, *, insecure: bool = False) -> None:
    """``corral push``: bars per uploaded layer, then where to find the model."""
    from corral.cli.client import ClientError

    try:
        with TransferProgress("pushing") as progress:
            for event in client.push(model, insecure=insecure):
                progress.update(event)
    except ClientError as exc:
        lowered = exc.message.lower()
        if "access denied" in lowered or "unauthorized" in lowered:
            raise ClientError(
                "you are not authorized to push to this namespace, create the model under a namespace you own",
                exc.reply_status,
            ) from None
        raise
    print(f"\nYou can find your model at:\n\n\t{push_destination(model)}")


def create(client: Client, model: str, modelfile: Path | None, *, quantize: str | None = None) -> None:
    """``corral create``: parse the Modelfile here, upload the files it names, then stream ``/api/create``."""
    from corral.cli.client import ClientError
    from corral.cli.modelfile import ModelfileError

    if modelfile is None:
        default = Path("Modelfile")
        text, relative_dir = (default.read_text(encoding="utf-8"), Path.cwd()) if default.is_file() else (
            "FROM .\n", Path.cwd())
    else:
        if not modelfile.is_file():
            raise ClientError("specified Modelfile wasn't found")
        text, relative_dir = modelfile.read_text(encoding="utf-8"), modelfile.resolve().parent
    with TransferProgress("pulling") as progress:
        gathering = progress.spinner("gathering model components")
        try:
            plan = build_plan(parse(text), relative_dir, lambda name: model_weights(client, name))
        except ModelfileError as exc:
            raise ClientError(str(exc)) from None
        progress.set_message(gathering, "gathering model components", running=False)
        for path, digest in plan.uploads().items():
            _upload(client, progress, path, digest)
        body = plan.finalize()
        body["model"] = model
        if quantize:
            body["quantize"] = quantize
        quantize_task: TaskID | None = None
        quantize_status = ""
        for event in client.create(body):
            status = str(event.get("status") or "")
            if not event.get("digest") and "quantizing" in status:
                # one line that keeps updating, not a new line per percent
                quantize_status = status
                if quantize_task is None:
                    quantize_task = progress.side_spinner(status)
                else:
                    progress.set_message(quantize_task, status)
                continue
            progress.update(event)
        if quantize_task is not None:
            progress.set_message(quantize_task, quantize_status, running=False)


def model_weights(client: Client, name: str) -> str | None:
    """The digest of an installed model's weights, read off the blob path in the FROM line of its Modelfile (for
    ``DRAFT <model>``); None when the server has no such model."""
    from corral.cli.client import ClientError

    try:
        text = str(client.show(name).get("modelfile") or "")
        commands = parse(text)
    except (ClientError, ValueError):
        return None
    for command in commands:
        if command.name == "model":
            blob = Path(command.args).name
            return "sha256:" + blob[len("sha256-"):] if blob.startswith("sha256-") else None
    return None


def _upload(client: Client, progress: TransferProgress, path: Path, digest: str) -> None:
    size = max(path.stat().st_size, 1)
    task = progress.side_spinner(f"copying file {digest} 0%")
    sent = 0

    def on_bytes(n: int) -> None:
        nonlocal sent
        sent += n
        progress.set_message(task, f"copying file {digest} {min(100, sent * 100 // size)}%")

    client.create_blob(digest, path, on_bytes)
    progress.set_message(task, f"copying file {digest} 100%", running=False)
