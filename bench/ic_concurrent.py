"""Interactive control under concurrency: many clients, each waiting for its own operation.

Used by bench/ic_latency.py (its concurrent mode). Each client is one HTTP/1.1 keep-alive
connection over raw asyncio streams, so the client's CPU (which competes with the cluster's on
2 cores) stays a small part of what is measured; every client owns one pipeline and alternates
stop / resume on it with `?wait` and an Idempotency-Key of its own per operation. Afterwards the
run is checked: `all-operations` must hold every answered operation with the status, operation
and pipeline the client was told, exactly one operation per key, and a few keys sent again must
answer the same ic_id.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from urllib.parse import urlsplit


class HttpConnection:
    """One keep-alive HTTP/1.1 connection; requests on it go one at a time."""

    def __init__(
        self, host: str, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.host, self.port, self._reader, self._writer = host, port, reader, writer

    @classmethod
    async def open(cls, url: str) -> HttpConnection:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        return cls(host, port, *await asyncio.open_connection(host, port))

    async def close(self) -> None:
        self._writer.close()
        await self._writer.wait_closed()

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict]:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        if body:
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        length = 0
        for line in header_lines:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
        data = await self._reader.readexactly(length)
        return int(status_line.split()[1]), json.loads(data) if data else {}


@dataclass(frozen=True)
class Answer:
    key: str
    pipeline_id: int
    action: str
    status_code: int
    body: dict
    seconds: float


async def _client(conn: HttpConnection, pipeline_id: int, ops: int, tag: str) -> list[Answer]:
    answers = []
    try:
        for n in range(ops):
            action = ("stop", "resume")[n % 2]
            key = f"{tag}-{pipeline_id}-{n}"
            path = f"/api/v1/pipelines/{pipeline_id}/{action}?wait=10"
            start = time.perf_counter()
            code, body = await conn.request("POST", path, b"{}", {"Idempotency-Key": key})
            elapsed = time.perf_counter() - start
            answers.append(Answer(key, pipeline_id, action, code, body, elapsed))
    finally:
        await conn.close()
    return answers


async def run(url: str, pipeline_ids: list[int], ops: int, tag: str) -> tuple[list[Answer], float]:
    """`ops` operations spread over one client per pipeline; (answers, wall seconds). Every
    connection is open before the clock starts."""
    clients = len(pipeline_ids)
    conns = await asyncio.gather(*(HttpConnection.open(url) for _ in pipeline_ids))
    start = time.perf_counter()
    batches = await asyncio.gather(
        *(
            _client(conn, pid, ops // clients + (i < ops % clients), tag)
            for i, (conn, pid) in enumerate(zip(conns, pipeline_ids, strict=True))
        )
    )
    return [a for batch in batches for a in batch], time.perf_counter() - start


async def check(url: str, answers: list[Answer], resend: int = 5) -> list[str]:
    """What is inconsistent between the answers and the log's view of them (empty: nothing)."""
    problems = []
    conn = await HttpConnection.open(url)
    try:
        code, listed = await conn.request("GET", "/dispatcher/all-operations")
        if code != 200:
            return [f"all-operations answered {code}"]
        by_id = {op["ic_id"]: op for op in listed}
        seen: dict[int, str] = {}
        for a in answers:
            if a.status_code != 200:
                problems.append(f"{a.key}: HTTP {a.status_code} {a.body}")
                continue
            ic_id = a.body["ic_id"]
            if ic_id in seen:
                problems.append(f"{a.key} and {seen[ic_id]} got the same ic_id {ic_id}")
            seen[ic_id] = a.key
            listed_op = by_id.get(ic_id)
            if listed_op is None:
                problems.append(f"{a.key}: ic_id {ic_id} missing from all-operations")
                continue
            for field, want in (
                ("status", a.body["status"]),
                ("operation", a.action),
                ("pipeline_id", a.pipeline_id),
            ):
                if listed_op[field] != want:
                    problems.append(f"{a.key}: {field} {listed_op[field]!r}, answered {want!r}")
        # an odd stride picks stops and resumes: at the end each pipeline refuses one of them
        for a in answers[:: len(answers) // resend + 1][:resend]:
            path = f"/api/v1/pipelines/{a.pipeline_id}/{a.action}?wait=10"
            code, body = await conn.request("POST", path, b"{}", {"Idempotency-Key": a.key})
            if code != 200 or body.get("ic_id") != a.body.get("ic_id"):
                problems.append(f"{a.key} re-sent: HTTP {code} {body}, first {a.body}")
        code, after = await conn.request("GET", "/dispatcher/all-operations")
        if len(after) != len(listed):
            problems.append(f"re-sent keys added operations: {len(listed)} -> {len(after)}")
    finally:
        await conn.close()
    return problems
