"""``corral serve``: run the API server in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import sys
from types import FrameType

from corral import __version__, config
from corral.config import HostPort


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
        "Listening on %s:%d (corral %s), models in %s", bind.host, bind.port, __version__, config.models_dir()
    )
    _announce_engine()
    if not bind.is_loopback and config.api_key() is None:
        logging.getLogger("corral.http.server").warning(
            "listening beyond loopback without CORRAL_API_KEY: every host that can reach %s:%d can use this server",
            bind.host, bind.port)
    app = create_app(bind=bind)
    lane = app.state.fast_lane
    Server(uvicorn.Config(
        app,
        http=fastlane.protocol_class(lane),
        host=bind.host,
        port=bind.port,
        log_level="warning",
        access_log=config.debug(),
        timeout_graceful_shutdown=5,
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
