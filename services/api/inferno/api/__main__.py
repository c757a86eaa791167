"""`python -m inferno.api`: serve the api with uvicorn on INFERNO_API_HOST:INFERNO_API_PORT.

uvicorn turns SIGTERM/SIGINT into a graceful shutdown: live event streams end, open requests
finish, then the lifespan stops the projection and drains the NATS connection.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import structlog
import uvicorn

from inferno.api.app import create_app
from inferno.api.streams import Server
from inferno.runtime.bootstrap import service_main
from inferno.runtime.logs import log_effective_config
from inferno.runtime.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inferno.api", description=__doc__)
    parser.add_argument("--host", help="listen address (default: INFERNO_API_HOST)")
    parser.add_argument("--port", type=int, help="listen port (default: INFERNO_API_PORT)")
    args = parser.parse_args(argv)
    return service_main("api", lambda settings: _serve(settings, args.host, args.port))


def _serve(settings: Settings, host: str | None, port: int | None) -> None:
    log = structlog.get_logger("inferno.api")
    log_effective_config(log, settings)
    host = host or settings.api_host
    port = port if port is not None else settings.api_port
    log.info("listening", url=f"http://{host}:{port}")
    app = create_app(dataclasses.replace(settings, api_host=host))  # the Host it answers to
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # keep our logging: uvicorn's records go through structlog
        access_log=False,
        lifespan="on",
    )
    Server(config, app.state.event_streams).run()  # ends open event streams at shutdown


if __name__ == "__main__":
    sys.exit(main())
