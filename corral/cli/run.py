"""``corral run``: find (or pull) the model, load it, then answer one prompt or open the interactive chat.

The flow is Ollama's ``RunHandler``: ``/api/show`` (a 404 pulls the model), an empty-messages ``/api/chat`` that
loads it, then ``/api/chat`` streams the answer. Piped stdin is read whole and put before the prompt arguments;
with a prompt, piped input or stdout not a terminal, there is no chat loop.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from corral.cli.client import Client, ClientError
from corral.cli.display import ResponseWriter
from corral.cli.interactive import Session
from corral.cli.progress import is_terminal
from corral.cli.turn import RunOptions, chat, load_model, terminal_width, user_message

if TYPE_CHECKING:
    from corral.store.store import Store


def join_prompt(args: Sequence[str], stdin_text: str | None) -> str:
    """Ollama's rule: non-empty piped stdin comes first, then the prompt arguments, all joined by spaces."""
    parts = list(args)
    if stdin_text:
        parts.insert(0, stdin_text)
    return " ".join(parts)


def show_or_pull(client: Client, model: str, *, insecure: bool = False) -> dict[str, Any]:
    """``/api/show``; a 404 pulls the model first (with progress bars), as ``ollama run`` does."""
    try:
        return client.show(model)
    except ClientError as exc:
        if exc.reply_status != 404:
            raise
    from corral.cli import transfer

    transfer.pull(client, model, insecure=insecure)
    return client.show(model)


_GGUF_NAME_BAD = re.compile(r"[^a-z0-9_.-]+")
_GGUF_NAMESPACE = "gguf"


def is_gguf_path(argument: str) -> bool:
    """A ``run`` argument naming an existing ``.gguf`` file; such a path wins over a model of the same name."""
    return argument.lower().endswith(".gguf") and Path(argument).is_file()


def gguf_model_name(path: Path, digest: str) -> str:
    """``gguf/<stem>:<first 12 hex of the digest>``: the same file always gets the same name, and a changed file a
    new one. The stem is lowercased and reduced to the characters a model name allows."""
    stem = _GGUF_NAME_BAD.sub("-", path.stem.lower())
    stem = stem.lstrip(".-").rstrip(".-")[:80].rstrip(".-") or "model"
    return f"{_GGUF_NAMESPACE}/{stem}:{digest.removeprefix('sha256:')[:12].lower()}"


def _linked_digest(blobs_dir: Path, path: Path) -> str | None:
    """The digest of the store blob that is a hard link of ``path`` (same inode), found without hashing.

    A blob's name is its content's digest and a hard link shares that content, so a file imported by an earlier
    run is recognised by a directory scan instead of rereading gigabytes.
    """
    try:
        st = path.stat()
        if st.st_nlink < 2:
            return None
        entries = list(os.scandir(blobs_dir))
    except OSError:
        return None
    for entry in entries:
        if not entry.name.startswith("sha256-") or len(entry.name) != 71:
            continue
        try:
            blob = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if (blob.st_ino, blob.st_dev, blob.st_size) == (st.st_ino, st.st_dev, st.st_size):
            return "sha256:" + entry.name[len("sha256-"):].lower()
    return None


def _file_digest(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            hasher.update(chunk)
    return "sha256:" + hasher.hexdigest()


def _has_model(store: Store, name: str, digest: str) -> bool:
    """Whether ``name`` exists and its weights are exactly ``digest`` (then there is nothing to import)."""
    from corral.errors import StoreError
    from corral.store import manifest as mf
    from corral.store.store import canonical_digest

    try:
        layer = store.read_manifest(name).manifest.first_layer(mf.MEDIA_MODEL)
    except StoreError:
        return False
    return layer is not None and canonical_digest(layer.digest) == digest and store.has_blob(digest)


def import_gguf(store: Store, path: Path, *, log: TextIO | None = None) -> tuple[str, bool]:
    """Add a local GGUF file to ``store`` by content digest; returns ``(model name, whether it was imported)``.

    The weights are hard-linked into the store when it is on the same filesystem (copied otherwise), so running a
    file costs no disk. A builtin template equal to the GGUF's own Jinja template is added when one is found
    (as ``create`` does); otherwise the model has no TEMPLATE layer and the engine applies the Jinja template.
    """
    from corral.authoring.bundled import add_gguf_model
    from corral.store.gguf_info import read_gguf_info
    from corral.templates.detect import detect

    digest = _linked_digest(store.blobs_dir, path) or _file_digest(path)
    name = gguf_model_name(path, digest)
    if _has_model(store, name, digest):
        return name, False
    if log is not None:
        log.write(f"importing {path} as {name}\n")
        log.flush()
    info = read_gguf_info(path)
    template: tuple[str, dict[str, object]] | None = None
    system = ""
    if info.chat_template:
        found = detect(info.chat_template, bos_token=info.bos_token, eos_token=info.eos_token,
                       add_bos=info.metadata.get("tokenizer.ggml.add_bos_token") is not False)
        if found is not None:
            template, system = (found.template, dict(found.params)), found.system
    add_gguf_model(store, name, path, template=template, system=system)
    if not _has_model(store, name, digest):  # the file changed between hashing and linking
        raise ClientError(f"{path} changed while it was imported; run it again")
    return name, True


def resolve_gguf_argument(client: Client, model: str, *, log: TextIO | None = None) -> str:
    """``corral run ./model.gguf``: import the file into the local store and return the model name to run.

    Only the CLI does this, for a server on this machine sharing the store in ``CORRAL_MODELS``; the HTTP API
    never takes file paths.
    """
    if not is_gguf_path(model):
        return model
    from corral import config
    from corral.cli.client import is_local
    from corral.errors import InvalidModelName, StoreError
    from corral.store.store import Store

    if not is_local(client.host):
        raise ClientError(f"cannot run a local GGUF file on the remote server at {client.host.url}")
    store = Store(config.models_dir())
    try:
        name, _imported = import_gguf(store, Path(model), log=log)
    except (StoreError, InvalidModelName, ValueError) as exc:
        raise ClientError(f"cannot import {model}: {exc}") from None
    try:
        client.show(name)
    except ClientError as exc:
        if exc.reply_status == 404:
            raise ClientError(
                f"imported {model} as {name}, but the server at {client.host.url} does not see it: "
                "it uses a different model store (CORRAL_MODELS)"
            ) from None
        raise
    return name


def embed(client: Client, opts: RunOptions, truncate: bool | None, dimensions: int) -> None:
    if not opts.prompt:
        raise ClientError(f'embedding models require input text. Usage: corral run {opts.model} "your text here"')
    body: dict[str, Any] = {"model": opts.model, "input": opts.prompt}
    if opts.keep_alive is not None:
        body["keep_alive"] = opts.keep_alive
    if truncate is not None:
        body["truncate"] = truncate
    if dimensions > 0:
        body["dimensions"] = dimensions
    embeddings = client.embed(body).get("embeddings") or []
    if not embeddings:
        raise ClientError("no embeddings returned")
    print(json.dumps(embeddings[0], separators=(",", ":")))


def run(
    client: Client,
    opts: RunOptions,
    prompt_args: Sequence[str],
    *,
    stdin: TextIO,
    truncate: bool | None = None,
    dimensions: int = 0,
) -> None:
    interactive = True
    stdin_text: str | None = None
    if not is_terminal(stdin):
        stdin_text = stdin.read()
        interactive = False
    opts.prompt = join_prompt(prompt_args, stdin_text)
    if opts.prompt:
        interactive = False
    if not is_terminal(sys.stdout):
        interactive = False

    opts.model = resolve_gguf_argument(client, opts.model, log=sys.stderr)
    info = show_or_pull(client, opts.model, insecure=opts.insecure)
    capabilities = [str(c) for c in info.get("capabilities") or []]
    if not opts.think_explicit:
        opts.think = True if "thinking" in capabilities else None
    opts.multimodal = (
        "vision" in capabilities
        or "audio" in capabilities
        or bool(info.get("projector_info"))
        or any(".vision." in key for key in info.get("model_info") or {})
    )
    opts.parent_model = str((info.get("details") or {}).get("parent_model") or "")

    if "embedding" in capabilities:
        embed(client, opts, truncate, dimensions)
        return

    load_model(client, opts)
    if interactive:
        for message in info.get("messages") or []:
            if message.get("role") == "user":
                print(f">>> {message.get('content', '')}")
            elif message.get("role") == "assistant":
                writer = ResponseWriter(sys.stdout, ansi=True, wrap_width=terminal_width(sys.stdout))
                writer.write(str(message.get("content") or ""))
                print("\n")
        Session(client, opts).loop()
        return
    if not opts.prompt:
        return  # nothing to answer: the model is loaded, as Ollama does with empty input
    opts.messages = [user_message(opts, opts.prompt)]
    chat(client, opts)
