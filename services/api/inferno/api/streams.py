"""Open live streams (SSE), and ending them when the api shuts down.

uvicorn's graceful shutdown waits for every open response to finish before it runs the
lifespan's shutdown, so a stream that only ends when its client leaves would hold the process
forever. `Server` tells the streams first (`EventStreams.close`), from its signal handler; the
lifespan closes them too, for servers that are not ours (tests running the app in-process).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import uvicorn


class EventStreams:
    def __init__(self) -> None:
        self._open: dict[asyncio.Event, asyncio.AbstractEventLoop] = {}
        self.closing = False

    @contextmanager
    def opened(self) -> Iterator[asyncio.Event]:
        """An event set when the stream must end: the api is shutting down."""
        closed = asyncio.Event()
        if self.closing:
            closed.set()
        self._open[closed] = asyncio.get_running_loop()
        try:
            yield closed
        finally:
            self._open.pop(closed, None)

    def close(self) -> None:
        """End every open stream; safe from a signal handler or another thread."""
        self.closing = True
        for closed, loop in list(self._open.items()):
            if not loop.is_closed():
                loop.call_soon_threadsafe(closed.set)

    def __len__(self) -> int:
        return len(self._open)


class Server(uvicorn.Server):
    """uvicorn's server, ending the app's live streams as soon as it is asked to exit."""

    def __init__(self, config: uvicorn.Config, streams: EventStreams) -> None:
        super().__init__(config)
        self._streams = streams

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._streams.close()
        super().handle_exit(sig, frame)
