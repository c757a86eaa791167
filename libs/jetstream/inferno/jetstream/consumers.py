"""Named durable pull consumers on the work-queue stream, one per executor (`executor-<id>`).

A durable keeps its position and unacked messages while its service restarts, so an executor
that crashes picks up where it left off; its name shows what reads the stream (`nats consumer
ls`). Creation is create-or-update: the settings in code win (ack wait, max deliver and the
filter can be updated in place), so a redeploy with a new ack wait needs no manual step.

The consumer's own state lives in nats-server's memory (`mem_storage`), not on disk. On a
work-queue stream the stream itself is the durable record: an acked message is removed from it,
an unacked one stays. So a consumer that a server restart forgot is created again with nothing
lost (`WorkPull`): what it had delivered and not seen acked is delivered again, which an
executor already handles (a redelivery after its own crash, an order sent twice). On file,
under `sync_interval: always`, every consumer's state is rewritten (a temp file, two fsyncs and
a rename) up to ten times a second while it acks: 22 % of nats-server's CPU in
`bench/dispatch.py`'s 32-executor run, more than any stream write.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

import nats.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import ServerError, ServiceUnavailableError

_log = structlog.get_logger(__name__)

STORAGE_NOT_UPDATABLE = 10012  # "storage type can not be updated"
Subscribe = Callable[[], Awaitable[JetStreamContext.PullSubscription]]


async def durable_pull(
    js: JetStreamContext,
    stream: str,
    durable: str,
    *,
    filter_subject: str,
    ack_wait: float,
    max_deliver: int,
    deliver_policy: DeliverPolicy = DeliverPolicy.ALL,
) -> JetStreamContext.PullSubscription:
    """Create (or update) the durable `durable` on the work-queue `stream` and bind a pull
    subscription to it.

    Acks are explicit: a message not acked within `ack_wait` seconds is redelivered, at most
    `max_deliver` times in all (-1: no limit). Long work should call `msg.in_progress()`.
    A durable stored on file (by an older version) is replaced: its storage cannot be updated
    in place, and its unacked messages stay in the stream for the new one.
    """
    config = ConsumerConfig(
        name=durable,
        durable_name=durable,
        filter_subject=filter_subject,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        max_deliver=max_deliver,
        deliver_policy=deliver_policy,
        mem_storage=True,
    )
    try:
        await js.add_consumer(stream, config=config)
    except ServerError as error:
        if error.err_code != STORAGE_NOT_UPDATABLE:
            raise
        _log.info("work consumer moved to memory storage", stream=stream, consumer=durable)
        await js.delete_consumer(stream, durable)
        await js.add_consumer(stream, config=config)
    return await js.pull_subscribe_bind(durable=durable, stream=stream)


class WorkPull:
    """One executor's `durable_pull`, created again when the server no longer has it: a fetch
    nobody answers (503) means the consumer is gone (a server restart forgot it, or someone
    removed it), and without this the executor would wait for work that never comes. On a
    cluster a just-created consumer can be answered 503 too, until its interest reaches this
    client's node (`../shared/nats-notes.md`); creating it again is then a no-op update."""

    def __init__(self, subscribe: Subscribe, durable: str) -> None:
        self._subscribe, self.durable = subscribe, durable  # `subscribe`: a `durable_pull`
        self._sub: JetStreamContext.PullSubscription | None = None

    async def open(self) -> None:
        """Create (or update) the consumer and subscribe; errors are the caller's to retry."""
        self._sub = await self._subscribe()

    async def fetch(self, batch: int, timeout: float) -> list[Msg]:
        """Up to `batch` messages within `timeout` (`nats.errors.TimeoutError` when none came);
        none, at once, when the consumer had to be created again."""
        if self._sub is None:
            await self.open()
        assert self._sub is not None
        try:
            return await self._sub.fetch(batch, timeout=timeout)
        except ServiceUnavailableError:
            _log.warning(
                "work fetch unanswered (503); creating the consumer again", consumer=self.durable
            )
            await self.close()
            await self.open()
            return []

    async def close(self) -> None:
        """Unsubscribe (the durable stays): a pull subscription's inbox can hold the status of
        an expired fetch, which would stall the connection's drain for its whole timeout."""
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
