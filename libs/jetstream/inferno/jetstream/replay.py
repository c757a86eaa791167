"""Reading the log in order: `replay` (catch up to a point, then return) and `follow` (live tail).

`follow` uses an ordered push consumer with a callback (nats-py handles gaps and reconnects);
`replay` streams batches from a pull consumer into a plain subscription, bounded in bytes as well
as messages (`inferno.jetstream.pulls`), which is faster still (docs/benchmarks.md). The stream
sequence and pending count are read straight from the message's ack subject, which is six times
cheaper than `msg.metadata` (that builds datetimes and dataclasses per message); on a replay this
is the hot path:
  $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts_ns>.<pending>            (9 tokens)
  $JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts_ns>.<pending>.<rand>
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from inferno.jetstream.pulls import pull_all

_log = structlog.get_logger(__name__)

Handler = Callable[[bytes, int], None]
"""handler(data, stream_seq); called in stream order."""

FOLLOW_HEARTBEAT_S = 1.0
"""A tail's idle heartbeat. nats-py recreates an ordered consumer after two heartbeat periods
without one, so this bounds how long a tail stays silent once its consumer is gone (its node
died): 2–4 s instead of 10–20 s with the default of 5 s, for one small message a second."""


def parse_ack_subject(reply: str) -> tuple[int, int]:
    """(stream seq, messages pending) from a JetStream ack subject."""
    tokens = reply.split(".")
    if len(tokens) == 9:
        return int(tokens[5]), int(tokens[8])
    return int(tokens[7]), int(tokens[10])  # with the domain and account hash tokens


def consumer_config(
    filter_subjects: list[str], start_seq: int | None, start_time: datetime | None
) -> ConsumerConfig:
    if start_seq is not None and start_time is not None:
        raise ValueError("give start_seq or start_time, not both")
    config = ConsumerConfig(filter_subjects=filter_subjects)
    if start_seq is not None and start_seq > 1:
        config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
        config.opt_start_seq = start_seq
    elif start_time is not None:
        config.deliver_policy = DeliverPolicy.BY_START_TIME
        config.opt_start_time = start_time
    else:
        config.deliver_policy = DeliverPolicy.ALL
    return config


async def _subjects(js: JetStreamContext, stream: str, subjects: str | None) -> list[str]:
    if subjects is not None:
        return [subjects]
    return list((await js.stream_info(stream)).config.subjects or [])


async def replay(
    js: JetStreamContext,
    stream: str,
    handler: Handler,
    *,
    subjects: str | None = None,
    start_seq: int | None = None,
    start_time: datetime | None = None,
    until_seq: int | None = None,
    batch: int = 2000,
) -> int:
    """Deliver the stream's messages (those on `subjects`, if given) from `start_seq` or
    `start_time` (default: the beginning) up to `until_seq` (default: the last sequence when the
    call starts; a later `until_seq` stops at the current end) to `handler`, in order.
    Returns the last sequence delivered, 0 if none.
    An exception from `handler` stops the replay and propagates.

    A catch-up is bounded, so it needs none of the ordered push consumer's machinery (flow
    control, heartbeats, per-message sequence checks in nats-py): an ephemeral pull consumer
    without acks streams batches into a plain subscription. This is the hot path of every
    service restart.
    """
    info = await js.stream_info(stream)
    until = info.state.last_seq if until_seq is None else until_seq
    if until < 1 or (start_seq is not None and start_seq > until):
        return 0
    filters = [subjects] if subjects is not None else list(info.config.subjects or [])
    last_delivered = 0

    def visit(msg: Msg) -> bool:
        nonlocal last_delivered
        seq, pending = parse_ack_subject(msg.reply)
        if seq <= until:
            handler(msg.data, seq)
            last_delivered = seq
        # pending == 0: nothing more matches now (a filter may leave no message at `until`)
        return seq < until and pending > 0

    await pull_all(
        js, stream, consumer_config(filters, start_seq, start_time), visit, batch=batch, in_flight=2
    )
    return last_delivered


class Follower:
    """A live tail started by `follow`; `stop()` ends it and re-raises a handler's exception."""

    def __init__(self, stream: str) -> None:
        self._stream = stream
        self._sub: JetStreamContext.PushSubscription | None = None
        self.last_seq = 0
        self.error: Exception | None = None

    def _deliver(self, handler: Handler, msg: Msg) -> None:
        if self.error is not None:
            return
        seq, _ = parse_ack_subject(msg.reply)
        try:
            handler(msg.data, seq)
        except Exception as error:
            self.error = error
            _log.error("follow handler failed; tail stopped", stream=self._stream, seq=seq)
            return
        self.last_seq = seq

    async def stop(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            await sub.unsubscribe()
        if self.error is not None:
            raise self.error


async def follow(
    js: JetStreamContext,
    stream: str,
    handler: Handler,
    *,
    subjects: str | None = None,
    start_seq: int,
) -> Follower:
    """Deliver every message from `start_seq` on to `handler`, then keep delivering new ones
    as they are appended, until `stop()`. After a reconnect the tail resumes after the last
    message it delivered (the ordered consumer recreates itself)."""
    follower = Follower(stream)
    filters = await _subjects(js, stream, subjects)
    config = consumer_config(filters, start_seq, None)
    config.idle_heartbeat = FOLLOW_HEARTBEAT_S

    async def on_message(msg: Msg) -> None:
        follower._deliver(handler, msg)

    follower._sub = await js.subscribe(
        filters[0], stream=stream, cb=on_message, ordered_consumer=True, config=config
    )
    return follower
