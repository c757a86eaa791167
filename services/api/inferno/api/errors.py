"""Every error leaves the api as JSON `{"error": "..."}` with a status a client can act on.

400 names the field that is wrong, 404 the thing that does not exist, 405 the methods the path
has, 409 the transition the projection already shows to be invalid (or an Idempotency-Key
reused for another request), 413 a body or command over its limit, 503 a log that is
unreachable; 500 says nothing about internals (the details go to the log line instead). The
front door's own refusals (Host 400, Origin 403, 413, 415) are in `inferno.api.guard`.
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from inferno.api.guard import allow, methods_of
from inferno.api.responses import json_response
from inferno.api.tracing import TRACE_HEADER, trace_id_of
from inferno.jetstream import LogUnavailable

_log = structlog.get_logger(__name__)

_WHERE = {"query": "query parameter", "path": "path parameter", "header": "header"}


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def bad_field(field: str, reason: str) -> ApiError:
    return ApiError(400, f"field '{field}': {reason}")


def validation_message(error: dict[str, Any]) -> str:
    """One pydantic error as a sentence naming where it is: `field 'dataset.rows': ...`."""
    source, *path = error["loc"]
    if error["type"] == "json_invalid":
        return f"request body is not valid JSON: {error.get('ctx', {}).get('error', '')}".rstrip()
    reason = error["msg"]
    if error["type"] == "value_error":  # our own validators: their text, without pydantic's prefix
        reason = str(error["ctx"]["error"])
    if not path:
        return (
            "request body is required" if error["type"] == "missing" else f"request body: {reason}"
        )
    name = ".".join(str(part) for part in path)
    return f"{_WHERE.get(source, 'field')} '{name}': {reason}"


def install(app: FastAPI) -> None:
    async def api_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return json_response({"error": exc.message}, exc.status)

    async def invalid(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return json_response({"error": validation_message(exc.errors()[0])}, 400)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 405:  # the router names the first route's methods, not the path's
            allowed = allow(methods_of(request.app.routes, request.scope))
            message = f"{request.method} is not allowed on {request.url.path}; it allows {allowed}"
            return json_response({"error": message}, 405, {"Allow": allowed})
        return json_response({"error": str(exc.detail)}, exc.status_code, exc.headers)

    async def log_unavailable(request: Request, exc: Exception) -> Response:
        _log.warning("log unavailable", path=request.url.path, error=str(exc))
        return json_response({"error": "the log is unavailable; retry later"}, 503)

    async def internal(request: Request, exc: Exception) -> Response:
        # this one runs outside every middleware, the trace id's too: it names the id itself
        trace_id = trace_id_of(request.scope)
        _log.error("unhandled error", path=request.url.path, trace_id=trace_id, exc_info=exc)
        headers = {TRACE_HEADER: trace_id} if trace_id else None
        return json_response({"error": "internal error"}, 500, headers)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(LogUnavailable, log_unavailable)
    app.add_exception_handler(Exception, internal)
