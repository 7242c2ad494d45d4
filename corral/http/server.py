"""``corral serve``: run the API server in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import os
import re
import sys
from types import FrameType

from corral import __version__, config
from corral.config import HostPort

REPLICA_HEADER = "X-Corral-Replica"
_REPLICA_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def replica_id() -> str | None:
    """``CORRAL_REPLICA_ID``: a name for this server among replicas behind a load balancer, sent back on every
    response as ``X-Corral-Replica`` (uvicorn's default headers, so the protocol-level fast lane sends it too).
    Only the ``CORRAL_`` name; a value that could not be a header token is refused at start."""
    value = os.environ.get("CORRAL_REPLICA_ID", "").strip()
    if not value:
        return None
    if not _REPLICA_RE.fullmatch(value):
        raise ValueError("CORRAL_REPLICA_ID must be 1 to 64 letters, digits, '.', '_', ':' or '-'")
    return value


def serve(bind: HostPort | None = None) -> None:
    """Bind to CORRAL_HOST/OLLAMA_HOST (default 127.0.0.1:11434) and serve; runners stop when this returns."""
    import uvicorn

    from corral.api.streaming import begin_shutdown
    from corral.http import fastlane
    from corral.http.app import create_app

    class Server(uvicorn.Server):
        """Tells streams in flight to finish with an error line as soon as a stop signal arrives."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            begin_shutdown()
            super().handle_exit(sig, frame)

    bind = bind or config.host()
    try:
        replica = replica_id()
    except ValueError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    if config.require_auth() and not bind.is_loopback and config.api_key() is None:
        print(f"Error: CORRAL_REQUIRE_AUTH is set and the server would listen on {bind.host}:{bind.port}, "
              "beyond this machine, but CORRAL_API_KEY is not set", file=sys.stderr)
        raise SystemExit(1)
    logging.basicConfig(
        level=logging.DEBUG if config.debug() else logging.INFO,
        format="time=%(asctime)s level=%(levelname)s source=%(name)s msg=%(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.DEBUG if config.debug() else logging.WARNING)
    logging.getLogger("corral.http.server").info(
        "Listening on %s:%d (corral %s), models in %s%s", bind.host, bind.port, __version__, config.models_dir(),
        f", replica {replica}" if replica else "")
    _announce_engine()
    if not bind.is_loopback and config.api_key() is None:
        logging.getLogger("corral.http.server").warning(
            "listening beyond loopback without CORRAL_API_KEY: every host that can reach %s:%d can use this server",
            bind.host, bind.port)
    app = create_app(bind=bind)
    Server(uvicorn.Config(
        app,
        # The fast lane rides on uvicorn's internals: checked here, uvicorn's own protocol if they moved.
        http=fastlane.server_protocol(app.state.fast_lane),
        host=bind.host,
        port=bind.port,
        log_level="warning",
        access_log=config.debug(),
        timeout_graceful_shutdown=5,
        headers=[(REPLICA_HEADER, replica)] if replica else None,
    )).run()


def _announce_engine() -> None:
    """Decide the engine now (corral.engines.select) and say which, so a bad CORRAL_ENGINE or CORRAL_RPC_SERVERS
    stops the server at start with one line rather than failing every load."""
    from corral.engines import rpc, select
    from corral.errors import EngineError

    logger = logging.getLogger("corral.http.server")
    try:
        choice = select.current()
        workers = rpc.servers()
    except EngineError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    logger.info(choice.describe())
    if workers:
        if choice.engine is not None and choice.engine.rpc:
            logger.info("RPC workers for generation runners: %s", ", ".join(workers))
        else:
            logger.warning("CORRAL_RPC_SERVERS is set but the %s engine has no RPC backend: models run on this "
                           "machine alone ('corral engine build --rpc' builds one that has)", choice.label)
