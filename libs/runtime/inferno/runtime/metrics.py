"""`/metrics` for the services without an HTTP server of their own (scheduler, executor).

The endpoint is served on the service's event loop, not in a thread (prometheus_client's
`start_http_server`): collectors then read the service's live state (the scheduler's decision
state, the executor's running shards) at scrape time without locks, and the loop pays nothing
between scrapes. `refresh` runs before each scrape for what needs I/O (a stream's last sequence,
for the replay lag). `GET /healthz` answers `ok` from the same loop without any I/O: a liveness
probe (deploy/k8s) that fails only when the loop is stuck, never because NATS is away. Every
other path answers 404; the server reads one request and closes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog
from nats.js import JetStreamContext
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

_log = structlog.get_logger(__name__)

Refresh = Callable[[], Awaitable[None]]
REQUEST_TIMEOUT_S = 5.0
MAX_HEAD_BYTES = 16 << 10


class MetricsPortInUse(RuntimeError):
    """The port INFERNO_METRICS_PORT names is taken."""


class MetricsServer:
    """`GET /metrics` (and `/healthz`) on `host:port` (0: any free port; `port` says which
    after `start`): the process-wide registry (counters, process metrics), then `live`, a
    collector of this run's state, kept out of the global registry so that several runs in
    one process never clash."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        live: Collector | None = None,
        refresh: Refresh | None = None,
    ) -> None:
        self.host, self.port = host, port
        self._registries = [REGISTRY]
        if live is not None:
            own = CollectorRegistry(auto_describe=False)
            own.register(live)
            self._registries.append(own)
        self._refresh = refresh
        self._server: asyncio.Server | None = None

    async def start(self) -> MetricsServer:
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self.port)
        except OSError as error:
            raise MetricsPortInUse(
                f"cannot serve metrics on {self.host}:{self.port}: {error.strerror}"
                " (set INFERNO_METRICS_PORT to a free port, or 0 for none)"
            ) from None
        self.port = self._server.sockets[0].getsockname()[1]
        _log.info("metrics served", url=f"http://{self.host}:{self.port}/metrics")
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_S)
            method, path = _request_line(head)
            path = path.split("?", 1)[0]
            if method == "GET" and path == "/healthz":
                await _answer(writer, b"200 OK", b"text/plain", b"ok\n")
                return
            if method != "GET" or path != "/metrics":
                await _answer(writer, b"404 Not Found", b"text/plain", b"not found: try /metrics\n")
                return
            await self._answer_metrics(writer)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass  # a client that went away or never finished its request
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer_metrics(self, writer: asyncio.StreamWriter) -> None:
        if self._refresh is not None:
            try:
                await self._refresh()
            except Exception as error:  # stale gauges beat no metrics at all
                _log.warning("metrics refresh failed", error=repr(error))
        body = b"".join(generate_latest(registry) for registry in self._registries)
        await _answer(writer, b"200 OK", CONTENT_TYPE_LATEST.encode(), body)


def _request_line(head: bytes) -> tuple[str, str]:
    parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
    return (parts[0], parts[1]) if len(parts) == 3 else ("", "")


async def _answer(writer: asyncio.StreamWriter, status: bytes, kind: bytes, body: bytes) -> None:
    writer.write(
        b"HTTP/1.1 " + status + b"\r\nContent-Type: " + kind
        + b"\r\nContent-Length: " + str(len(body)).encode()
        + b"\r\nConnection: close\r\n\r\n" + body
    )  # fmt: skip
    await writer.drain()


async def last_seq(js: JetStreamContext, stream: str) -> int:
    """The stream's last sequence (for a replay lag: this minus what the service has folded)."""
    info = await js.stream_info(stream)
    return int(info.state.last_seq)
