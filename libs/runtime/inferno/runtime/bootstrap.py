"""One way for every service to start: settings from the environment, logging, a NATS connection
(TLS and credentials from the settings) and the log ensured.

`service_main` is each service's `__main__` boundary: a bad variable exits 2 naming it, a log
whose configuration conflicts with what Inferno needs exits 1 with the conflict, never a
traceback. `open_log` is the cosmicpython bootstrap: production defaults, and tests hand in their
own connection.
"""

from __future__ import annotations

import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from inferno.events.names import Names
from inferno.jetstream import LogConfigConflict, connect, ensure_log
from inferno.runtime.logs import configure_logging
from inferno.runtime.metrics import MetricsPortInUse
from inferno.runtime.settings import ConfigError, Settings


@dataclass(frozen=True, slots=True)
class Log:
    """An open log: the connection, its JetStream context and the names of what it holds."""

    nc: NATS
    js: JetStreamContext
    names: Names


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The client TLS context NATS_TLS_* ask for (`Settings` refuses a cert without its key)."""
    if not (settings.nats_tls_ca or settings.nats_tls_cert):
        return None
    context = ssl.create_default_context(cafile=settings.nats_tls_ca)
    if settings.nats_tls_cert and settings.nats_tls_key:
        context.load_cert_chain(settings.nats_tls_cert, settings.nats_tls_key)
    return context


async def open_log(settings: Settings, client_name: str, *, nc: NATS | None = None) -> Log:
    """Connect as `client_name` (unless given `nc`, which stays the caller's) and create whatever
    of the log is missing, logging one line per stream, bucket and store."""
    owned = nc is None
    if nc is None:
        nc = await connect(
            settings.nats_url,
            name=client_name,
            creds=settings.nats_creds,
            user=settings.nats_user,
            password=settings.nats_password,
            tls=tls_context(settings),
        )
    js = nc.jetstream()
    names = Names(settings.namespace)
    log = structlog.get_logger("inferno.log")
    try:
        lines = await ensure_log(
            js,
            names,
            replicas=settings.replicas,
            heartbeat_ttl_s=settings.heartbeat_ttl_s,
            lease_ttl_s=settings.lease_ttl_s,
        )
    except BaseException:
        if owned:
            await nc.close()
        raise
    for line in lines:
        log.info("log", item=line)
    return Log(nc, js, names)


def service_main(service: str, serve: Callable[[Settings], int | None]) -> int:
    """Read the settings, configure logging for `service`, run `serve` and turn the errors a
    person must fix into one line and an exit status (2: configuration, 1: the log)."""
    try:
        settings = Settings.from_env()
    except ConfigError as error:
        print(f"inferno {service}: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format, service=service)
    try:
        return serve(settings) or 0
    except MetricsPortInUse as error:
        print(f"inferno {service}: {error}", file=sys.stderr)
        return 2
    except LogConfigConflict as error:
        structlog.get_logger(f"inferno.{service}").error("cannot start", error=str(error))
        return 1
