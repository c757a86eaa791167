"""What the routes share: the gateway's connections and projection, and common parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Query, Request
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from inferno.api.projection import Projection
from inferno.events import Names
from inferno.jetstream import Appender
from inferno.runtime.settings import Settings


@dataclass(frozen=True, slots=True)
class Gateway:
    settings: Settings
    names: Names
    nc: NATS
    js: JetStreamContext
    appender: Appender
    projection: Projection


async def _gateway(request: Request) -> Gateway:
    """Async, as every dependency here: FastAPI runs a plain `def` one in a worker thread, a
    hop for a lookup (~13% of the api's CPU under 50 concurrent clients, with `_caller`'s)."""
    return request.app.state.gateway


GatewayDep = Annotated[Gateway, Depends(_gateway)]

Wait = Annotated[
    float,
    Query(
        ge=0,
        le=60,
        description="Seconds to wait for the operation to complete or fail before answering "
        "with its current status.",
    ),
]

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Retrying with the same key returns the original operation (same ic_id) "
        "instead of issuing the command again; the same key with a different request is a 409. "
        "Keys are remembered for 2 minutes.",
    ),
]
