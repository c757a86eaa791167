"""The api's front door (docs/security.md): one pure ASGI middleware, in front of everything,
that refuses what a hostile web page can make a browser send, and bounds request bodies.

- `Host` must name the api (loopback, INFERNO_API_HOST, INFERNO_ALLOWED_HOSTS): a DNS-rebinding
  page reaches a local api under the page's own name, so this is what keeps it from reading.
  The probes are exempt: orchestrators call them by IP, and they hold nothing.
- `Origin`, when sent, must be the api's own or listed in INFERNO_CORS_ORIGINS. Browsers send it
  on every cross-site write (bodiless ones and preflights too), so this refuses them all. A
  loopback api also lets in the origins notebooks run under on the user's own machine
  (`NOTEBOOK_ORIGINS`: localhost pages, VS Code webviews; Colab's frames on Colab), so
  RapidFire's panel works unchanged; a remote page never has one of those origins.
- A write's body must be JSON (the upload route also takes files): text/plain, form and
  multipart bodies are what browsers send cross-site without asking first.
- `OPTIONS` answers with the path's `Allow`: every route on it, not the first one's (the
  api's 405 handler says the same, through `methods_of`).
- A body over its limit is a 413, counted while it is read, so a missing or wrong
  Content-Length lets nothing through.

Every refusal is JSON `{"error": ...}`: 400 (Host), 403 (Origin), 413, 415; OPTIONS is a 204.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inferno.api.responses import json_response
from inferno.datasets.files import CONTENT_TYPES
from inferno.runtime.settings import Settings, host_name

LOOPBACK = frozenset({"localhost", "127.0.0.1", "[::1]"})
PROBES = frozenset({"/healthz", "/readyz", "/dispatcher/health-check"})
UPLOAD_MEDIA = frozenset({"multipart/form-data", "application/octet-stream", *CONTENT_TYPES})
"""What the upload route reads beside JSON (`inferno.api.data`)."""
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")
_ANY_ADDRESS = frozenset({"0.0.0.0", "[::]"})  # a listen address, never a name a client uses

NOTEBOOK_ORIGINS = (
    r"https?://(localhost|127\.0\.0\.1|\[::1\])(:[0-9]{1,5})?|vscode-webview://[a-z0-9.-]+"
)
"""Pages of this machine (Jupyter at localhost:8888, ...) and VS Code's notebook webviews: only
a local process or VS Code itself serves them, and those reach a loopback api directly anyway
(docs/security.md), so letting them in grants nothing new. DNS rebinding changes what a name
resolves to, not a page's origin."""
COLAB_ORIGINS = r"https://([a-z0-9-]+\.)*(googleusercontent\.com|colab\.research\.google\.com)"
"""Colab's output frames, let in (with credentials, which its proxy needs) only when the api
runs on a Colab VM, which a browser reaches through Colab's authenticated proxy alone."""


def on_colab(environ: Mapping[str, str]) -> bool:
    return "COLAB_RELEASE_TAG" in environ


def default_origins(settings: Settings, environ: Mapping[str, str]) -> str | None:
    """The origin pattern a loopback api allows without INFERNO_CORS_ORIGINS; None elsewhere."""
    if host_name(settings.api_host) not in LOOPBACK:
        return None
    return f"{NOTEBOOK_ORIGINS}|{COLAB_ORIGINS}" if on_colab(environ) else NOTEBOOK_ORIGINS


@dataclass(frozen=True, slots=True)
class Rules:
    hosts: frozenset[str]  # names the api answers to; "*" for any
    origins: frozenset[str]  # INFERNO_CORS_ORIGINS; "*" for any
    max_command_bytes: int
    max_upload_bytes: int
    upload_paths: frozenset[str]
    origin_pattern: str | None = None  # `default_origins`
    credentials: bool = False  # Colab's frames send cookies its proxy needs

    @classmethod
    def of(
        cls,
        settings: Settings,
        upload_paths: Collection[str],
        environ: Mapping[str, str] = os.environ,
    ) -> Rules:
        own = {host_name(settings.api_host)} - _ANY_ADDRESS
        hosts = LOOPBACK | own | set(settings.allowed_hosts)
        return cls(
            hosts=frozenset(hosts),
            origin_pattern=default_origins(settings, environ),
            credentials=default_origins(settings, environ) is not None and on_colab(environ),
            origins=frozenset(o.lower().rstrip("/") for o in settings.cors_origins),
            max_command_bytes=settings.max_command_bytes,
            max_upload_bytes=settings.max_upload_bytes,
            upload_paths=frozenset(upload_paths),
        )


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    error: str


def requested_host(header: str) -> str | None:
    """The name in a `Host` header, without its port (`[::1]:8851` -> `[::1]`); None when it
    is not a host name at all."""
    name, colon, port = header.strip().rpartition(":")
    if not (colon and port.isdigit() and (name.endswith("]") or ":" not in name)):
        name = header.strip()  # no port, or a bare IPv6 address
    try:
        return host_name(name)
    except ValueError:
        return None


def check_host(rules: Rules, path: str, host: str) -> Refusal | None:
    if path in PROBES or "*" in rules.hosts or requested_host(host) in rules.hosts:
        return None
    if not host:
        return Refusal(400, "a Host header is required")
    return Refusal(
        400,
        f"Host {host!r} is not one this api serves; to reach it by that name, add the name to"
        " INFERNO_ALLOWED_HOSTS",
    )


def listed(rules: Rules, origin: str) -> bool:
    """In INFERNO_CORS_ORIGINS or the loopback defaults (which CORSMiddleware then serves)."""
    given = origin.lower().rstrip("/")
    if "*" in rules.origins or given in rules.origins:
        return True
    return (
        rules.origin_pattern is not None and re.fullmatch(rules.origin_pattern, given) is not None
    )


def own_origin(origin: str, host: str) -> bool:
    """The api's own page: the origin's host:port is the request's `Host` (the scheme is left
    out, since a TLS terminator in front of the api changes it)."""
    return bool(host) and origin.lower().rstrip("/").partition("://")[2] == host.lower()


def check_origin(rules: Rules, origin: str | None, host: str) -> Refusal | None:
    if origin is None or listed(rules, origin) or own_origin(origin, host):
        return None
    return Refusal(
        403,
        f"Origin {origin!r} may not call this api; to let pages from it, list it in"
        " INFERNO_CORS_ORIGINS",
    )


def is_json(media: str) -> bool:
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def body_limit(rules: Rules, path: str) -> tuple[int, str]:
    """The most bytes the body of a request to `path` may have, and the setting that says so."""
    if path in rules.upload_paths:
        return rules.max_upload_bytes, "INFERNO_MAX_UPLOAD_BYTES"
    return rules.max_command_bytes, "INFERNO_MAX_COMMAND_BYTES"


def too_large(rules: Rules, path: str) -> str:
    limit, setting = body_limit(rules, path)
    hint = "" if path in rules.upload_paths else "; send datasets with POST /api/v1/datasets"
    return f"the request body is over the limit of {limit} bytes ({setting}){hint}"


def check_body(rules: Rules, method: str, path: str, headers: Headers) -> Refusal | None:
    """A declared length over the limit, or a write whose body is not JSON (or a file, on the
    upload route)."""
    length = headers.get("content-length", "")
    declared = int(length) if length.isdigit() else None
    if declared is not None and declared > body_limit(rules, path)[0]:
        return Refusal(413, too_large(rules, path))
    has_body = "transfer-encoding" in headers or bool(declared)
    if method not in _WRITES or not has_body:
        return None
    media = headers.get("content-type", "").partition(";")[0].strip().lower()
    upload = path in rules.upload_paths
    if is_json(media) or (upload and media in UPLOAD_MEDIA):
        return None
    accepted = "application/json" + (", a multipart form or a JSONL, CSV or Parquet file" * upload)
    given = f"Content-Type {media!r}" if media else "a body without a Content-Type"
    return Refusal(415, f"{given} is not accepted here: send {accepted}")


def methods_of(routes: list[BaseRoute], scope: Scope) -> frozenset[str]:
    """Every method some route answers on this request's path (empty: no route has the path).
    Each is asked as the router would (FastAPI nests included routers, so a route's own
    `methods` is not at hand)."""

    def served(method: str) -> bool:
        probe = {**scope, "method": method}
        return any(route.matches(probe)[0] is Match.FULL for route in routes)

    return frozenset(filter(served, _METHODS))


def allow(methods: frozenset[str]) -> str:
    """The `Allow` header: what the path serves, and OPTIONS, which the guard answers."""
    return ", ".join(sorted(methods | {"OPTIONS"}))


class BodyTooLarge(HTTPException):
    """Raised from `receive` while a body is read: FastAPI lets an HTTPException through its
    body parsing, and the api's handler answers it as JSON."""


class BrowserGuard:
    """Pure ASGI, outermost: it refuses before CORS, auth or routing see the request."""

    def __init__(self, app: ASGIApp, rules: Rules, routes: list[BaseRoute]) -> None:
        self._app, self._rules, self._routes = app, rules, routes  # routes: the live list

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        rules, path, method = self._rules, scope["path"], scope["method"]
        headers = Headers(scope=scope)
        host, origin = headers.get("host", ""), headers.get("origin")
        refusal = check_host(rules, path, host) or check_origin(rules, origin, host)
        if refusal is not None:
            await json_response({"error": refusal.error}, refusal.status)(scope, receive, send)
            return
        cors = _cors_headers(rules, origin)
        preflight = "access-control-request-method" in headers
        if method == "OPTIONS" and not (preflight and cors):  # CORSMiddleware answers those
            methods = methods_of(self._routes, scope)
            if methods:
                response = Response(status_code=204, headers={"Allow": allow(methods), **cors})
                await response(scope, receive, send)
                return
        refusal = check_body(rules, method, path, headers)
        if refusal is not None:
            response = json_response({"error": refusal.error}, refusal.status, cors)
            await response(scope, receive, send)
            return
        await self._app(scope, self._counted(receive, path), send)

    def _counted(self, receive: Receive, path: str) -> Receive:
        limit, received = body_limit(self._rules, path)[0], 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(413, too_large(self._rules, path))
            return message

        return counted


def _cors_headers(rules: Rules, origin: str | None) -> dict[str, str]:
    """What lets a listed origin's page read the guard's own answers (CORSMiddleware, inside
    the guard, adds them to everything else)."""
    if origin is None or not listed(rules, origin):
        return {}
    credentials = {"Access-Control-Allow-Credentials": "true"} if rules.credentials else {}
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin", **credentials}
