"""A trace id for every request, in every log line it causes and in its answer (docs/api.md).

`TraceContext`, a pure ASGI middleware in front of everything, takes the id from a valid W3C
`traceparent` (its trace-id), else from a valid `X-Request-Id`, else makes one. An invalid
header is ignored, as W3C Trace Context asks, never refused: proxies set these. The id is bound
for structlog while the request runs, kept in the scope (`trace_id_of`: the commands record it,
the 500 handler logs it) and sent back as `Inferno-Trace-Id` on every answer.
"""

from __future__ import annotations

import re
import uuid

import structlog
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

TRACE_HEADER = "Inferno-Trace-Id"
_TRACE_ID = "inferno_trace_id"
"""Key in the ASGI scope's `state`."""
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def trace_id_from(traceparent: str | None, request_id: str | None) -> str:
    """The request's trace id: a valid `traceparent`'s (not version ff, no suffix on version
    00, neither id all zeros), else a valid `X-Request-Id` (1 to 128 of A-Z a-z 0-9 . _ : -),
    else a new one of 32 hex digits, so it can start a W3C trace."""
    match = _TRACEPARENT.match((traceparent or "").strip())
    if match:
        version, trace, parent, _flags, suffix = match.groups()
        all_zero = set(trace) == {"0"} or set(parent) == {"0"}
        if version != "ff" and not (version == "00" and suffix) and not all_zero:
            return trace
    request_id = (request_id or "").strip()
    return request_id if _REQUEST_ID.match(request_id) else uuid.uuid4().hex


def trace_id_of(scope: Scope) -> str | None:
    """The trace id `TraceContext` gave this request (None outside one)."""
    state = scope.get("state")
    return state.get(_TRACE_ID) if isinstance(state, dict) else None


class TraceContext:
    """Gives every http request a trace id: bound for its log lines, answered in a header."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        trace_id = trace_id_from(headers.get("traceparent"), headers.get("x-request-id"))
        scope.setdefault("state", {})[_TRACE_ID] = trace_id

        async def send_traced(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[TRACE_HEADER] = trace_id
            await send(message)

        with structlog.contextvars.bound_contextvars(trace_id=trace_id):
            await self._app(scope, receive, send_traced)
