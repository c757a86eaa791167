"""The api's wiring, all in one place: `create_app(settings)` builds the FastAPI app, and its
lifespan connects to NATS (unless given a connection), ensures the log, and runs the projection.

Production defaults; tests pass their own connection (`nc=`), which the app then never closes.
"""

from __future__ import annotations

import hmac
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import nats.errors
import structlog
from fastapi import FastAPI
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketClose

from inferno.api import errors, routes_dispatcher, routes_v1
from inferno.api.deps import Gateway, GatewayDep
from inferno.api.projection import Projection
from inferno.api.responses import MsgspecJSONResponse, json_response
from inferno.events import Names
from inferno.events.config import Settings
from inferno.events.jetstream import Appender, connect, ensure_log

_log = structlog.get_logger(__name__)

OPEN_PATHS = frozenset(
    {
        "/healthz",
        "/readyz",
        "/dispatcher/health-check",
        "/docs",
        "/docs/oauth2-redirect",
        "/openapi.json",
        "/redoc",
    }
)
"""Reachable without the bearer token: probes, and the API's description (it holds no data)."""


class BearerAuth:
    """401 unless `Authorization: Bearer <token>` (pure ASGI: it sits on every request)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self._app = app
        self._expected = f"bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" or scope["path"] in OPEN_PATHS:
            await self._app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        scheme, _, credential = given.partition(b" ")
        if hmac.compare_digest(scheme.lower() + b" " + credential.strip(), self._expected):
            await self._app(scope, receive, send)
        elif scope["type"] == "websocket":
            await WebSocketClose(code=1008)(scope, receive, send)
        else:
            message = "missing bearer token" if not given else "invalid bearer token"
            response = json_response(
                {"error": message}, 401, {"WWW-Authenticate": 'Bearer realm="inferno"'}
            )
            await response(scope, receive, send)


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    if not (settings.nats_tls_ca or settings.nats_tls_cert):
        return None
    context = ssl.create_default_context(cafile=settings.nats_tls_ca)
    if settings.nats_tls_cert and settings.nats_tls_key:
        context.load_cert_chain(settings.nats_tls_cert, settings.nats_tls_key)
    return context


def create_app(settings: Settings, *, nc: NATS | None = None) -> FastAPI:
    names = Names(settings.namespace)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        conn = nc or await connect(
            settings.nats_url,
            name="inferno-api",
            creds=settings.nats_creds,
            user=settings.nats_user,
            password=settings.nats_password,
            tls=tls_context(settings),
        )
        js = conn.jetstream()
        projection = Projection(js, names)
        try:
            for line in await ensure_log(
                js,
                names,
                replicas=settings.replicas,
                heartbeat_ttl_s=settings.heartbeat_ttl_s,
                lease_ttl_s=settings.lease_ttl_s,
            ):
                _log.info("log", item=line)
            await projection.start()
            app.state.gateway = Gateway(settings, names, conn, js, Appender(conn), projection)
            yield
        finally:
            await projection.stop()
            if nc is None:
                await conn.drain()

    app = FastAPI(
        title="Inferno",
        summary="Steer LLM evaluation and batch-inference experiments while they run.",
        version="0.1.0",
        lifespan=lifespan,
        default_response_class=MsgspecJSONResponse,
    )
    errors.install(app)
    app.include_router(routes_dispatcher.router)
    app.include_router(routes_v1.router)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> Response:
        """The process is up."""
        return json_response({"status": "ok"})

    @app.get("/readyz", tags=["health"])
    async def readyz(gw: GatewayDep) -> Response:
        """NATS connected, the log's streams present, the projection caught up."""
        reason = await _not_ready(gw)
        if reason is not None:
            return json_response({"status": "not ready", "error": reason}, 503)
        return json_response({"status": "ready"})

    if settings.token:  # added before CORS, so CORS is outermost and answers preflights itself
        app.add_middleware(BearerAuth, token=settings.token)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["*"],
            allow_headers=["*"],
        )
    return app


async def _not_ready(gw: Gateway) -> str | None:
    if not gw.nc.is_connected:
        return "not connected to NATS"
    for stream in (gw.names.cmd_stream, gw.names.evt_stream):
        try:
            await gw.js.stream_info(stream)
        except NotFoundError:
            return f"stream {stream} is missing"
        except nats.errors.Error as error:
            return f"stream {stream} is unreachable: {error!r}"
    if (failure := gw.projection.failure) is not None:
        return failure
    if not gw.projection.caught_up:
        return "projection is catching up"
    return None
