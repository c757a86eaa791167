"""Reading /api/v1/events from the SDK: every page in turn, and the live stream (SSE) with
resumption, so a caller sees each entry once across disconnects."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from inferno.client.sdk import Client

PAGE = 1000
RECONNECT_S = 1.0


def filters(**given: Any) -> dict[str, Any]:
    """Query parameters for the events routes: None left out, lists comma-joined."""
    shown = {}
    for key, value in given.items():
        if value is None or value == [] or value == ():
            continue
        shown[key] = ",".join(value) if isinstance(value, list | tuple) else value
    return shown


def pages(
    client: Client, params: Mapping[str, Any], after: str | None = None
) -> Iterator[dict[str, Any]]:
    """Each page from `after` on until one says no more: {"entries", "cursor", "more"}."""
    while True:
        page = client.events_page(params, after)
        yield page
        after = page["cursor"]
        if not page["more"]:
            return


class SseMessages:
    """Folds SSE lines into messages, one line at a time (shared by the sync and async
    streams): `feed` answers a message when a blank line ends one, else None."""

    def __init__(self) -> None:
        self.message: dict[str, str] = {}

    def feed(self, line: str) -> dict[str, str] | None:
        if line:
            name, _, value = line.partition(":")
            self.message[name] = value.removeprefix(" ")
            return None
        done, self.message = self.message, {}
        return done or None

    def rest(self) -> dict[str, str] | None:
        """What a stream that ended without a blank line left."""
        return self.message or None


def sse_messages(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    """SSE messages as {field: value}; a comment (heartbeat) is {"": text}."""
    fold = SseMessages()
    for line in lines:
        message = fold.feed(line)
        if message:
            yield message
    last = fold.rest()
    if last:
        yield last


async def sse_messages_async(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, str]]:
    """`sse_messages` over an async stream of lines."""
    fold = SseMessages()
    async for line in lines:
        message = fold.feed(line)
        if message:
            yield message
    last = fold.rest()
    if last:
        yield last


def follow(
    client: Client, http: httpx.Client, params: Mapping[str, Any], after: str | None
) -> Iterator[dict[str, Any]]:
    """Entries as they are stored, for ever: after a dropped connection it reconnects with
    `Last-Event-ID` (the `id:` last seen), so nothing is missed or repeated."""
    last_id = after
    while True:
        headers = {"Last-Event-ID": last_id} if last_id else {}
        try:
            with http.stream(
                "GET",
                "/api/v1/events/stream",
                params=params,
                headers=headers,
                timeout=httpx.Timeout(5.0, read=None),
            ) as response:
                if not response.is_success:
                    response.read()
                    client.raise_for(response)
                for message in sse_messages(response.iter_lines()):
                    if "id" in message:
                        last_id = message["id"]
                    if "data" in message:
                        yield json.loads(message["data"])
        except (httpx.RemoteProtocolError, httpx.ReadError):
            pass  # the api went away mid-stream: resume where it stopped
        except httpx.ConnectError:
            if last_id is None:
                raise
        time.sleep(RECONNECT_S)
