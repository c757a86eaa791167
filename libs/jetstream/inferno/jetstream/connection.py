"""Connecting a long-running service to NATS.

nats-py's defaults suit scripts, not services: it gives up reconnecting after about two minutes
and notices a dead server only after about four (nats-notes). Services reconnect forever, ping
every few seconds, and log every connection change so an outage shows up in their logs.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Any

import structlog
from nats.aio.client import Client as NATS

_log = structlog.get_logger(__name__)


def _servers(url: str | Sequence[str]) -> list[str]:
    """`url` may list several servers (a cluster), comma-separated or as a sequence."""
    parts = url.split(",") if isinstance(url, str) else list(url)
    servers = [part.strip() for part in parts if part.strip()]
    if not servers:
        raise ValueError("no NATS server URL given")
    return servers


def _where(nc: NATS) -> str:
    """host:port of the current server, without any credentials the URL may carry."""
    url = nc.connected_url
    return f"{url.hostname}:{url.port}" if url else "?"


async def connect(
    url: str | Sequence[str],
    *,
    name: str,
    creds: str | None = None,
    user: str | None = None,
    password: str | None = None,
    token: str | None = None,
    tls: ssl.SSLContext | None = None,
    **overrides: Any,
) -> NATS:
    """A connection that reconnects forever and detects a dead server within ~15 s.

    `name` shows in the server's connection list (`nats server report connections`).
    `overrides` go to `nats.aio.client.Client.connect` last, so tests can shorten timings.
    """
    nc = NATS()

    async def on_error(error: Exception) -> None:
        _log.warning("nats error", connection=name, error=repr(error))

    async def on_disconnected() -> None:
        _log.warning("nats disconnected", connection=name)

    async def on_reconnected() -> None:
        _log.info("nats reconnected", connection=name, server=_where(nc))

    async def on_closed() -> None:
        _log.info("nats connection closed", connection=name)

    options: dict[str, Any] = {
        "servers": _servers(url),
        "name": name,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 1.0,
        "ping_interval": 5,
        "max_outstanding_pings": 3,
        "connect_timeout": 5,
        "error_cb": on_error,
        "disconnected_cb": on_disconnected,
        "reconnected_cb": on_reconnected,
        "closed_cb": on_closed,
    }
    if creds is not None:
        options["user_credentials"] = creds
    if user is not None:
        options["user"] = user
    if password is not None:
        options["password"] = password
    if token is not None:
        options["token"] = token
    if tls is not None:
        options["tls"] = tls
    options.update(overrides)
    await nc.connect(**options)
    _log.info("nats connected", connection=name, server=_where(nc))
    return nc
