"""Every error Corral raises on purpose, in one tree, each branch with the HTTP status it answers with.

::

    CorralError                         status 500 unless a branch says otherwise
    ├── RequestError (400)              the request cannot be served as asked
    │   ├── InvalidModelName            not a model name Corral (or Ollama) accepts
    │   ├── InvalidDigest               not a sha256 digest (also a StoreError)
    │   ├── DigestMismatch              uploaded bytes do not hash to their digest (also a StoreError)
    │   ├── TemplateError               a Go template that does not parse or execute
    │   ├── ModelfileError              a Modelfile that cannot be read
    │   ├── ConvertError                a model directory or GGUF that cannot be converted or quantized
    │   ├── OptionError                 an option of the wrong type or out of range
    │   └── ParamError                  (CLI) a parameter the server would reject
    ├── NotFound (404)
    │   └── ModelNotFound               (also a StoreError)
    ├── ServerBusy (503)                too many requests waiting
    ├── APIError (any)                  raised by route code with an explicit status
    ├── CreateError (any)               ``/api/create`` failures, each with its own status
    ├── ServerError (500)               the server could not do what it should have
    │   ├── InferenceError              the engine failed while serving
    │   │   ├── RunnerError             the runner could not load the model, or died
    │   │   ├── RunnerReplyError        the engine answered with an error status (``status`` is its own)
    │   │   └── RunnerUnreachable       the connection to the engine failed or broke
    │   ├── EngineError                 an engine that cannot be built, found or run (corral engine, CORRAL_ENGINE)
    │   ├── ModelError                  a manifest that points at something unusable
    │   ├── StoreError                  a store operation failed
    │   │   ├── MissingBlob
    │   │   └── CorruptManifest
    │   ├── ManifestError               manifest or config bytes of the wrong shape
    │   ├── InvalidGGUF                 a file that is not a readable GGUF model
    │   ├── ArchiveError                an archive that cannot be written or is refused
    │   └── RegistryError               a pull or push failed
    │       ├── RegistryStatusError     the registry answered with an error status
    │       │   └── RegistryNotFound
    │       ├── RegistryUnreachable
    │       ├── Unauthorized
    │       └── TransferDigestMismatch  downloaded bytes do not hash to the manifest's digest
    └── ClientError                     (CLI) the server answered with an error, or did not answer
        └── ConnectError                nothing answered at the server's address

    Interrupted                         (CLI) Ctrl-C ended a command: a signal carried past click, not an error

The HTTP layer maps an error to its status by this tree alone (:func:`http_status`), so a new error needs no new
mapping: it joins the branch it belongs to. A class under two branches takes its status from the first
(``ModelNotFound`` is a 404, and the store's callers still catch it as a ``StoreError``). Several classes also derive
from a builtin (``ValueError``, ``LookupError``) so callers that predate the tree, and the standard library's
conventions, keep working.
"""

from __future__ import annotations

import logging
import traceback


class CorralError(Exception):
    """Raised on purpose; ``str()`` is safe to show to an API client (no server paths, no secrets)."""

    status: int = 500


class ServerError(CorralError):
    status = 500


class StoreError(ServerError):
    """A store operation failed."""


# -- the client's fault (4xx) ---------------------------------------------------------------------------------------


class RequestError(CorralError, ValueError):
    """The request cannot be served as asked."""

    status = 400


class InvalidModelName(RequestError):
    """The text is not a model name Corral (or Ollama) accepts."""


class InvalidDigest(RequestError, StoreError):
    def __init__(self, digest: object = None) -> None:
        super().__init__("invalid digest format")
        self.digest = digest


class DigestMismatch(RequestError, StoreError):
    def __init__(self, expected: str, got: str) -> None:
        super().__init__(f'digest mismatch, expected "{expected}", got "{got}"')
        self.expected = expected
        self.got = got


class TemplateError(RequestError):
    """A template failed to parse or to execute; the message says what and where, Go style."""


class ModelfileError(RequestError):
    """A Modelfile that cannot be read; ``str()`` starts with ``(line N):`` when a line is to blame, as in Ollama."""

    def __init__(self, message: str, line: int = 0) -> None:
        super().__init__(f"(line {line}): {message}" if line > 0 else message)
        self.message = message
        self.line = line


class ConvertError(RequestError):
    """The input cannot be converted or quantized: unsupported, malformed or hostile. Messages name files relative
    to the model directory and never carry an absolute path."""


class OptionError(RequestError):
    """An option of the wrong type or out of range; the message names the option like Ollama's. Ollama answers a
    wrong type with a 500; it is the client's error, so Corral answers 400 (docs/hardening.md)."""


class ParamError(RequestError):
    """A parameter name or value the server would reject; the message is Ollama's."""


class NotFound(CorralError, LookupError):
    status = 404


class ModelNotFound(NotFound, StoreError):
    def __init__(self, name: object) -> None:
        shown = name.display_shortest() if hasattr(name, "display_shortest") else str(name)
        super().__init__(f"model '{shown}' not found")
        self.name = shown


class ServerBusy(CorralError):
    """Too many requests are waiting; Ollama's exact message, two spaces included."""

    status = 503

    def __init__(self) -> None:
        super().__init__("server busy, please try again.  maximum pending requests exceeded")


class APIError(CorralError):
    """An error with an explicit HTTP status, raised by route code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class CreateError(CorralError):
    """``/api/create`` cannot do what was asked: 400 for a bad request, 404 for a missing base model, 500 for a
    failure of the server's own. Messages name files and digests, never server paths."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# -- the server's side (5xx) ------------------------------------------------------------------------------------------


class InferenceError(ServerError, RuntimeError):
    """The engine failed while serving (a 500, or an ``{"error"}`` line once streaming has begun)."""


class RunnerError(InferenceError):
    """The engine could not load the model, or died; the message is meant for the API client."""


class RunnerReplyError(InferenceError):
    """The engine answered with an error; ``engine_status`` is the engine's own HTTP status, which the service turns
    into a :class:`RequestError` (400) or an :class:`InferenceError` before it reaches a client."""

    def __init__(self, message: str, engine_status: int = 500) -> None:
        super().__init__(message)
        self.engine_status = engine_status


class RunnerUnreachable(InferenceError):
    """The connection to the engine failed or broke mid-stream: the runner has most likely died."""


class EngineError(ServerError):
    """An engine build failed, or ``CORRAL_ENGINE`` names no usable engine; the message says what to do."""


class ModelError(ServerError, ValueError):
    """The manifest points at something unusable (no weights, a broken template...)."""


class MissingBlob(StoreError):
    """A manifest names a blob that is absent or has the wrong size."""


class CorruptManifest(StoreError):
    """A manifest file (or manifest bytes handed in) that does not parse."""


class ManifestError(ServerError, ValueError):
    """A manifest or config blob that cannot be parsed or does not have the required shape."""


class InvalidGGUF(ServerError, ValueError):
    """The file is not a readable GGUF model: wrong magic, unsupported version, corrupt or truncated."""


class ArchiveError(ServerError):
    """The archive cannot be written or is refused; the message is one line for the CLI to print."""


class RegistryError(ServerError):
    """A pull or push failed; ``str()`` is the one line the user sees."""


class RegistryStatusError(RegistryError):
    """The registry answered with an HTTP error status (``<code>: <body>``, as Ollama words it)."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"{status}: {body}" if body else str(status))
        self.registry_status = status
        self.body = body


class RegistryNotFound(RegistryStatusError):
    """404: Ollama reports it as Go's ``os.ErrNotExist`` text."""

    def __init__(self) -> None:
        super().__init__(404, "")
        self.args = ("file does not exist",)

    def __str__(self) -> str:
        return "file does not exist"


class RegistryUnreachable(RegistryError):
    """No HTTP answer at all: refused, reset, timed out, name not resolved."""


class Unauthorized(RegistryError):
    """Authentication failed even after a token or basic credentials were tried."""

    def __init__(self, message: str = "unauthorized: access denied") -> None:
        super().__init__(message)


class TransferDigestMismatch(RegistryError):
    """The bytes received do not hash to the digest the manifest names."""

    def __init__(self, want: str, got: str) -> None:
        super().__init__(f"digest mismatch, file must be downloaded again: want {want}, got {got}")
        self.want = want
        self.got = got


# -- the CLI's side -------------------------------------------------------------------------------------------------


class ClientError(CorralError):
    """A CLI request failed: ``reply_status`` is the server's HTTP status (``None`` when no answer came), ``message``
    is for people."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reply_status = status


class ConnectError(ClientError):
    """Nothing answered at the server's address (refused, unreachable, timed out while connecting)."""


class Interrupted(Exception):
    """Ctrl-C ended a CLI command; carried past click, which would otherwise print a line of its own."""


def http_status(exc: BaseException) -> tuple[int, str]:
    """The HTTP status and message for an error, by its branch of the tree; anything else is an unexpected 500.

    The web framework's own 4xx rejections (Starlette's ``HTTPException``: a body that is not UTF-8, say) keep
    their status; they are recognised by shape so this module needs no framework import."""
    if isinstance(exc, CorralError):
        return exc.status, str(getattr(exc, "message", None) or exc)
    code = getattr(exc, "status_code", None)
    if isinstance(code, int) and 400 <= code < 500:
        return code, str(getattr(exc, "detail", None) or exc)
    return 500, f"internal error: {type(exc).__name__}"


def log_unhandled(logger: logging.Logger, exc: BaseException, where: str) -> None:
    """An unexpected exception in one line: its type and where it was raised; its message and traceback only with
    debug on, since a message may quote the request (a value that failed to parse, a piece of a prompt)."""
    if logger.isEnabledFor(logging.DEBUG):
        logger.error("unhandled error in %s: %r", where, exc, exc_info=exc)
        return
    frames = traceback.extract_tb(exc.__traceback__)
    at = f" at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else ""
    logger.error("unhandled error in %s: %s%s (set CORRAL_DEBUG=1 for details)", where, type(exc).__name__, at)
