"""Reading stored messages with where and when they were stored: `scan` (a bounded read from a
sequence or a time, stoppable by the visitor) and `tail` (the same, then live).

`replay`/`follow` hand a fold only (data, seq); an audit reader also needs the subject and the
server's timestamp, which the ack subject carries (`$JS.ACK.<stream>.<consumer>.<delivered>.
<sseq>.<cseq>.<ts_ns>.<pending>`), so nothing parses `msg.metadata`. Subject filters go to the
consumer: a query about one pipeline reads that pipeline's subjects, not the whole stream.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig

from inferno.jetstream.pulls import pull_all
from inferno.jetstream.replay import FOLLOW_HEARTBEAT_S, consumer_config

SCAN_BATCH = 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Stored(NamedTuple):
    seq: int
    subject: str
    time_ns: int
    data: bytes


def stored(msg: Msg) -> tuple[Stored, int]:
    """The message as stored, and how many more match its consumer now."""
    tokens = msg.reply.split(".")
    seq, ts, pending = (5, 7, 8) if len(tokens) == 9 else (7, 9, 10)
    return Stored(int(tokens[seq]), msg.subject, int(tokens[ts]), msg.data), int(tokens[pending])


def _config(subjects: Sequence[str], start_seq: int | None, start_ns: int | None) -> ConsumerConfig:
    """From a sequence past 1, else from a time (nanoseconds since the epoch), else the start."""
    if start_seq is not None and start_seq > 1:
        return consumer_config(list(subjects), start_seq, None)
    start_time = None if start_ns is None else _EPOCH + timedelta(microseconds=start_ns // 1000)
    return consumer_config(list(subjects), None, start_time)


async def scan(
    js: JetStreamContext,
    stream: str,
    visit: Callable[[Stored], bool],
    *,
    subjects: Sequence[str],
    start_seq: int | None = None,
    start_ns: int | None = None,
    batch: int = SCAN_BATCH,
) -> int:
    """Hand `visit` the messages on `subjects` from `start_seq` (or the first stored at or
    after `start_ns`; default: the beginning) in order, until it returns False or none is left
    now. Returns the last sequence visited (0: none)."""
    last = 0

    def visit_stored(msg: Msg) -> bool:
        nonlocal last
        message, pending = stored(msg)
        keep_going = visit(message)
        last = message.seq
        return keep_going and pending > 0

    await pull_all(
        js, stream, _config(subjects, start_seq, start_ns), visit_stored, batch=batch, in_flight=1
    )
    return last


async def read(
    js: JetStreamContext,
    stream: str,
    *,
    subjects: Sequence[str],
    limit: int,
    start_seq: int | None = None,
    start_ns: int | None = None,
) -> list[Stored]:
    """Up to `limit` messages as `scan` visits them: fewer when no more are stored now."""
    found: list[Stored] = []

    def keep(message: Stored) -> bool:
        found.append(message)
        return len(found) < limit

    batch = min(limit, SCAN_BATCH)
    await scan(
        js, stream, keep, subjects=subjects, start_seq=start_seq, start_ns=start_ns, batch=batch
    )
    return found


class Tail:
    """A live read started by `tail`; `stop()` ends it."""

    def __init__(self) -> None:
        self._sub: JetStreamContext.PushSubscription | None = None

    async def stop(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            with contextlib.suppress(Exception):  # the connection may be closing already
                await sub.unsubscribe()


async def tail(
    js: JetStreamContext,
    stream: str,
    deliver: Callable[[Stored], None],
    *,
    subjects: Sequence[str],
    start_seq: int | None = None,
    start_ns: int | None = None,
) -> Tail:
    """Hand `deliver` every message on `subjects` from `start_seq` (or `start_ns`) on, then each
    new one as it is stored, until `stop()`: an ordered push consumer, which nats-py recreates
    after a reconnect from the last message it delivered."""
    config = _config(subjects, start_seq, start_ns)
    config.idle_heartbeat = FOLLOW_HEARTBEAT_S
    started = Tail()

    async def on_message(msg: Msg) -> None:
        deliver(stored(msg)[0])

    started._sub = await js.subscribe(
        subjects[0], stream=stream, cb=on_message, ordered_consumer=True, config=config
    )
    return started
