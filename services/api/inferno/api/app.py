"""The api's wiring, all in one place: `create_app(settings)` builds the FastAPI app, and its
lifespan connects to NATS (unless given a connection), ensures the log, and runs the projection.

Production defaults; tests pass their own connection (`nc=`), which the app then never closes.
"""

from __future__ import annotations

import hmac
import os
import socket
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import nats.errors
import structlog
from fastapi import FastAPI
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketClose

from inferno.api import (
    errors,
    metrics,
    openapi,
    routes_dispatcher,
    routes_events,
    routes_executors,
    routes_rapidfire_fit,
    routes_ui,
    routes_v1,
)
from inferno.api.deps import Gateway, GatewayDep
from inferno.api.guard import BrowserGuard, Rules
from inferno.api.identity import AUTHENTICATED
from inferno.api.projection import Projection
from inferno.api.responses import MsgspecJSONResponse, json_response
from inferno.api.streams import EventStreams
from inferno.api.tracing import TraceContext
from inferno.events import Names
from inferno.jetstream import Appender, Cadence, SnapshotStore
from inferno.runtime.bootstrap import open_log
from inferno.runtime.settings import Credential, Settings

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
"""Reachable without the bearer token: probes, and the API's description (it holds no data);
so are the dashboard's page and assets (`routes_ui.is_ui_path`), which hold none either."""

UPLOAD_PATHS = frozenset({"/api/v1/datasets"})
"""Routes whose body is a dataset: they take files, and INFERNO_MAX_UPLOAD_BYTES of them."""


class BearerAuth:
    """401 unless `Authorization: Bearer <token>` with a configured token (pure ASGI: it sits on
    every request). The token's identity goes into the scope's state (`AUTHENTICATED`) for the
    commands' actor. Every token is compared, in constant time, whichever matches."""

    def __init__(self, app: ASGIApp, credentials: Sequence[Credential]) -> None:
        self._app = app
        self._expected = [(f"bearer {c.token}".encode(), c.identity) for c in credentials]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "lifespan" or path in OPEN_PATHS or routes_ui.is_ui_path(path):
            await self._app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        scheme, _, credential = given.partition(b" ")
        presented = scheme.lower() + b" " + credential.strip()
        identity = None
        for expected, name in self._expected:
            if hmac.compare_digest(presented, expected):
                identity = name
        if identity is not None:
            scope.setdefault("state", {})[AUTHENTICATED] = identity
            await self._app(scope, receive, send)
        elif scope["type"] == "websocket":
            await WebSocketClose(code=1008)(scope, receive, send)
        else:
            message = "missing bearer token" if not given else "invalid bearer token"
            response = json_response(
                {"error": message}, 401, {"WWW-Authenticate": 'Bearer realm="inferno"'}
            )
            await response(scope, receive, send)


def create_app(settings: Settings, *, nc: NATS | None = None) -> FastAPI:
    names = Names(settings.namespace)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log = await open_log(settings, "inferno-api", nc=nc)
        projection = Projection(
            log.js,
            names,
            snapshots=SnapshotStore(log.js, names),
            snapshot_cadence=Cadence(settings.snapshot_every_events, settings.snapshot_every_s),
            writer=f"api {socket.gethostname()}-{os.getpid()}",
        )
        try:
            await projection.start()
            app.state.gateway = Gateway(
                settings, names, log.nc, log.js, Appender(log.nc), projection
            )
            yield
        finally:
            app.state.event_streams.close()
            await projection.stop()
            if nc is None:
                await log.nc.drain()

    app = FastAPI(
        title="Inferno",
        summary="Steer LLM evaluation and batch-inference experiments while they run.",
        version="0.1.0",
        lifespan=lifespan,
        default_response_class=MsgspecJSONResponse,
    )
    errors.install(app)
    app.state.event_streams = EventStreams()  # live streams end before a shutdown waits on them
    # FastAPI tries routes in order, each router's twice (to match, then to handle), so the
    # order is the cost of reaching a route: /api/v1 first, RapidFire's routes after it
    app.include_router(routes_v1.router)
    app.include_router(routes_executors.router)
    app.include_router(routes_events.router)
    app.include_router(routes_dispatcher.router)
    app.include_router(routes_rapidfire_fit.router)
    app.include_router(metrics.router)
    app.include_router(routes_ui.history_router)
    app.include_router(routes_ui.ui_router)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> Response:
        """The process is up."""
        return json_response({"status": "ok"})

    @app.get("/readyz", tags=["health"], responses=openapi.errors(503))
    async def readyz(gw: GatewayDep) -> Response:
        """Ready when the cluster can make progress: NATS connected, the log's streams present,
        the projection following the log, a scheduler holding the lease. The body lists every
        check as `{"ok", "detail"}`; a 503 names the failed ones (`failed`) and gives the first
        one's detail as `error`. Executors are listed but never fail readiness: commands are
        decided without any, and shards wait for one to register (executors come and go)."""
        checks = await _readiness(gw)
        failed = [name for name, check in checks.items() if not check["ok"]]
        if failed:
            body = {"status": "not ready", "error": checks[failed[0]]["detail"], "failed": failed}
            return json_response({**body, "checks": checks}, 503)
        return json_response({"status": "ready", "checks": checks})

    credentials = settings.credentials()
    openapi.install(app, bearer=bool(credentials), open_paths=OPEN_PATHS)
    # The last added runs first: the trace id (so every answer and log line has one), then
    # the guard, then CORS, then the token, then routing. The guard is the first check because
    # it judges headers alone (Host, Origin, Content-Type, size) and its refusals must be
    # JSON, foreign preflights included (CORSMiddleware's are plain text). CORS comes before
    # the token because a preflight never carries one.
    if credentials:
        app.add_middleware(BearerAuth, credentials=credentials)
    rules = Rules.of(settings, UPLOAD_PATHS)
    if settings.cors_origins or rules.origin_pattern:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_origin_regex=rules.origin_pattern,
            allow_credentials=rules.credentials,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    app.add_middleware(BrowserGuard, rules=rules, routes=app.routes)
    app.add_middleware(TraceContext)
    return app


async def _readiness(gw: Gateway) -> dict[str, dict[str, Any]]:
    """Every readiness check, each `{"ok", "detail"}`, in the order they depend on each other."""

    def check(ok: bool, detail: str) -> dict[str, Any]:
        return {"ok": ok, "detail": detail}

    projection, names = gw.projection, gw.names
    connected = gw.nc.is_connected
    checks = {"nats": check(connected, "connected" if connected else "not connected to NATS")}
    checks["streams"] = check(*await _streams(gw))
    failure = projection.failure
    if failure is None and not projection.caught_up:
        failure = "projection is catching up"
    following = f"folded {names.evt_stream} up to sequence {projection.model.evt_seq}"
    checks["projection"] = check(failure is None, failure or following)
    leadership = projection.leadership
    checks["leader"] = check(*leadership.check(time.time(), names.leader_bucket))
    if (holder := leadership.holder) is not None:  # a launcher tells a lease taken since it began
        checks["leader"] |= {
            "holder": holder.scheduler_id,
            "term": holder.term,
            "since": holder.since,
        }
    registered = len(projection.executors)
    waiting = "none registered: shards wait until an executor registers"
    checks["executors"] = check(True, f"{registered} registered" if registered else waiting)
    return checks


async def _streams(gw: Gateway) -> tuple[bool, str]:
    for stream in (gw.names.cmd_stream, gw.names.evt_stream):
        try:
            await gw.js.stream_info(stream)
        except NotFoundError:
            return False, f"stream {stream} is missing"
        except nats.errors.Error as error:
            return False, f"stream {stream} is unreachable: {error!r}"
    return True, f"{gw.names.cmd_stream} and {gw.names.evt_stream} present"
