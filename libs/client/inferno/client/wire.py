"""What the sync `Client` and the `AsyncClient` share: how a request is built and how an
answer is judged, so both send the same thing and raise the same `InfernoError`s."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

from inferno.events.provenance import check_actor


class InfernoError(Exception):
    """The api answered with an error (status = HTTP status), or could not be reached (0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return f"{self.message} (HTTP {self.status})" if self.status else self.message


class ApiUnreachable(InfernoError):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(0, f"the Inferno api at {url} is not reachable ({reason})")
        self.url = url


def headers(token: str | None, actor: str | None) -> dict[str, str]:
    """Bearer token and `X-Inferno-Actor` (checked: printable ASCII, bounded)."""
    shown = {"Authorization": f"Bearer {token}"} if token else {}
    checked = check_actor(actor) if actor else None
    if checked:
        shown["X-Inferno-Actor"] = checked
    return shown


def request_args(
    timeout: httpx.Timeout,
    method: str,
    path: str,
    body: Any = None,
    wait: float | None = None,
    idempotency_key: str | None = None,
    params: Mapping[str, Any] | None = None,
    files: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Keyword arguments for `httpx.Client.request` / `AsyncClient.request`: None parameters
    left out, and the read timeout stretched by `wait` (the server holds the answer that long)."""
    query = {k: v for k, v in (params or {}).items() if v is not None}
    if wait is not None:
        query["wait"] = wait
    read = timeout.read
    if wait and read is not None:
        read += wait
    return {
        "method": method,
        "url": path,
        "json": body,
        "files": files,
        "params": query,
        "headers": {"Idempotency-Key": idempotency_key} if idempotency_key else {},
        "timeout": httpx.Timeout(timeout.connect or 5.0, read=read),
    }


def unreachable(base_url: str, error: httpx.TransportError) -> ApiUnreachable:
    return ApiUnreachable(base_url, str(error) or type(error).__name__)


def answer(response: httpx.Response, base_url: str) -> Any:
    """The JSON body of a 2xx answer (None when empty); otherwise `InfernoError`."""
    if not response.is_success:
        raise InfernoError(response.status_code, error_text(response))
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        request = response.request
        raise InfernoError(
            response.status_code,
            f"{request.method} {request.url.path} answered with something that is not JSON;"
            f" is {base_url} an Inferno api?",
        ) from None


def error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip() or response.reason_phrase
    if isinstance(body, dict):
        for key in ("error", "detail", "message"):
            if body.get(key):
                text = body[key]
                return text if isinstance(text, str) else json.dumps(text)
    return json.dumps(body)


def items(body: Any, key: str) -> list[dict[str, Any]]:
    """A list route's answer: a bare list, or an object holding it under `key`."""
    if isinstance(body, dict):
        body = body.get(key, body.get("items", []))
    return list(body or [])


def control_body(body: Mapping[str, Any] | None, reason: str | None) -> dict[str, Any] | None:
    """A pipeline action's body with its `reason` (the api records it)."""
    if reason is None:
        return dict(body) if body is not None else None
    return {**(body or {}), "reason": reason}


DISPATCHER_WRITES = frozenset(
    {"stop-pipeline", "resume-pipeline", "delete-pipeline", "clone-pipeline"}
)


def dispatcher(route: str, reason: str | None) -> tuple[str, dict[str, Any]]:
    """Path and query of a seed dispatcher write; ValueError for a route it does not have."""
    if route not in DISPATCHER_WRITES:
        raise ValueError(
            f"no dispatcher route {route!r}; one of {', '.join(sorted(DISPATCHER_WRITES))}"
        )
    return f"/dispatcher/{route}", {"reason": reason}
