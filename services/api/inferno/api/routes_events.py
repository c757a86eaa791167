"""/api/v1/events: the history as people read it, paged (`GET /events`) or live (`/events/stream`,
Server-Sent Events), both with the same filters. Entries: `inferno.audit.entries`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Header, Query, Request
from starlette.responses import Response, StreamingResponse

from inferno.api.deps import Gateway, GatewayDep
from inferno.api.errors import ApiError
from inferno.api.history import History
from inferno.api.openapi import errors
from inferno.api.responses import json_response
from inferno.audit import query as q
from inferno.audit.entries import Entry

router = APIRouter(prefix="/api/v1", tags=["events"])

MAX_LIMIT = 5000
_TIME = {
    "anyOf": [
        {"type": "string", "format": "date-time"},
        {"type": "string", "pattern": q.EPOCH_PATTERN},
    ]
}
_TIMES_SCHEMA = {
    "parameters": [
        {"name": name, "in": "query", "required": False, "schema": _TIME, "description": text}
        for name, text in (
            ("since", "entries stored at or after this time: RFC 3339, or epoch seconds"),
            ("until", "entries stored at or before this time: RFC 3339, or epoch seconds"),
        )
    ]
}
_encode = msgspec.json.Encoder().encode
FIRST = asyncio.FIRST_COMPLETED


def _listed(pattern: str) -> dict[str, Any]:
    """The items' pattern, said in the document; the route checks them itself (its message
    names the bad value instead of repeating the pattern)."""
    return {"items": {"type": "string", "pattern": pattern}}


class Filters:
    """The query parameters both routes take, turned into an `inferno.audit.query.Query`."""

    def __init__(
        self,
        request: Request,
        stream: Annotated[
            list[str],
            Query(
                json_schema_extra=_listed(q.STREAMS_PATTERN),
                description="which streams: cmd, evt, exec (repeat or comma-separate; default"
                " cmd and evt)",
            ),
        ] = [],  # noqa: B006 - FastAPI copies defaults
        experiment_id: Annotated[str | None, Query(max_length=200)] = None,
        pipeline_id: Annotated[int | None, Query(ge=0, le=10**15)] = None,
        ic_id: Annotated[int | None, Query(ge=1, le=10**15)] = None,
        type: Annotated[
            list[str],
            Query(
                json_schema_extra=_listed(q.TYPES_PATTERN),
                description="command, event or report types, e.g. stop_pipeline, shard_completed",
            ),
        ] = [],  # noqa: B006
        actor: Annotated[str | None, Query(max_length=200)] = None,
        from_seq: Annotated[
            int | None, Query(ge=1, le=10**15, description="lowest stream sequence")
        ] = None,
        to_seq: Annotated[
            int | None, Query(ge=1, le=10**15, description="highest stream sequence")
        ] = None,
        after: Annotated[
            str | None,
            Query(
                json_schema_extra={"pattern": q.CURSOR_PATTERN},
                description="a cursor a page answered: go on after it",
            ),
        ] = None,
    ) -> None:
        params = request.query_params
        try:
            self.query = q.Query(
                streams=q.parse_streams(stream),
                experiment_id=experiment_id,
                pipeline_id=pipeline_id,
                ic_id=ic_id,
                types=q.parse_types(type),
                actor=actor,
                since_ns=_time(params, "since"),
                until_ns=_time(params, "until"),
                from_seq=from_seq,
                to_seq=to_seq,
            )
            self.cursor = q.parse_cursor(after) if after is not None else {}
        except q.QueryError as error:
            raise ApiError(400, f"query parameter '{error.parameter}': {error.reason}") from None


def _time(params: Any, name: str) -> int | None:
    value = params.get(name)
    return None if value is None else q.parse_time(value, name)


def _history(gw: Gateway) -> History:
    return History(gw.js, gw.names, gw.projection)


@router.get("/events", openapi_extra=_TIMES_SCHEMA, responses=errors(400, 503))
async def list_events(
    gw: GatewayDep,
    filters: Annotated[Filters, Depends()],
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="entries per page")] = 100,
) -> Response:
    """The history from INFERNO_CMD and INFERNO_EVT (and INFERNO_EXEC with `stream=exec`),
    oldest first: `{"entries", "cursor", "more"}`. Pass `cursor` back as `after` for the next
    page; `more` is false once the log had no more matches when the page was read. An event
    that settles an operation carries its command's `actor`, `reason` and `trace_id`."""
    page = await _history(gw).page(filters.query, filters.cursor, limit)
    return json_response(
        {
            "entries": [msgspec.to_builtins(e) for e in page.entries],
            "cursor": q.format_cursor(page.cursor),
            "more": page.more,
        }
    )


@router.get(
    "/events/stream",
    openapi_extra=_TIMES_SCHEMA,
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **errors(400, 503)},
)
async def stream_events(
    request: Request,
    gw: GatewayDep,
    filters: Annotated[Filters, Depends()],
    heartbeat: Annotated[
        float, Query(ge=0.5, le=300, description="seconds between heartbeat comments")
    ] = 15.0,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            json_schema_extra={"pattern": q.CURSOR_PATTERN},
            description="resume after this entry (the `id:` of the last event received)",
        ),
    ] = None,
) -> StreamingResponse:
    """The same entries live, as Server-Sent Events: `id:` is the cursor after the entry, `data:`
    the entry as JSON, a `: heartbeat` comment every `heartbeat` seconds. Without `after`,
    `Last-Event-ID`, `since` or `from_seq` it starts with what is stored from now on; the first
    message (no data) gives the starting cursor as its `id:`."""
    cursor = filters.cursor
    if last_event_id is not None:
        try:
            cursor = q.parse_cursor(last_event_id, "Last-Event-ID")
        except q.QueryError as error:
            raise ApiError(400, f"header '{error.parameter}': {error.reason}") from None
    feed = _history(gw).follow(filters.query, cursor)
    streams = request.app.state.event_streams
    return StreamingResponse(
        _sse(feed, streams, heartbeat),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _sse(
    feed: AsyncIterator[tuple[Entry | None, q.Cursor]], streams: Any, heartbeat: float
) -> AsyncIterator[bytes]:
    """SSE framing of the feed, ended by the api's shutdown (`EventStreams`) or by Starlette
    cancelling it when the client goes away."""
    with streams.opened() as closed:
        closing = asyncio.ensure_future(closed.wait())
        step: asyncio.Future[tuple[Entry | None, q.Cursor]] | None = None
        try:
            started = False
            while True:
                step = asyncio.ensure_future(anext(feed))
                while not (
                    await asyncio.wait({step, closing}, timeout=heartbeat, return_when=FIRST)
                )[0]:
                    yield b": heartbeat\n\n"
                if not step.done():  # closing
                    break
                entry, cursor = step.result()
                step = None
                shown = q.format_cursor(cursor)
                if entry is not None:
                    yield f"id: {shown}\ndata: ".encode() + _encode(entry) + b"\n\n"
                elif not started:  # the first message: where the stream starts
                    yield f"id: {shown}\n: following\n\n".encode()
                started = True
        finally:
            closing.cancel()
            if step is not None:
                step.cancel()
                with contextlib.suppress(BaseException):
                    await step
            await feed.aclose()  # type: ignore[attr-defined]
