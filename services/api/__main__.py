"""`python -m inferno.api`: serve the api with uvicorn on INFERNO_API_HOST:INFERNO_API_PORT.

uvicorn turns SIGTERM/SIGINT into a graceful shutdown: open requests finish, then the lifespan
stops the projection and drains the NATS connection.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import structlog
import uvicorn

from inferno.api.app import create_app
from inferno.client.logs import configure_logging, log_effective_config
from inferno.events.config import ConfigError, Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inferno.api", description=__doc__)
    parser.add_argument("--host", help="listen address (default: INFERNO_API_HOST)")
    parser.add_argument("--port", type=int, help="listen port (default: INFERNO_API_PORT)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as error:
        print(f"inferno api: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format, service="api")
    log = structlog.get_logger("inferno.api")
    log_effective_config(log, settings)
    host = args.host or settings.api_host
    port = args.port if args.port is not None else settings.api_port
    log.info("listening", url=f"http://{host}:{port}")
    uvicorn.run(
        create_app(dataclasses.replace(settings, api_host=host)),  # the Host it answers to
        host=host,
        port=port,
        log_config=None,  # keep our logging: uvicorn's records go through structlog
        access_log=False,
        lifespan="on",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
