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
    )).run()
