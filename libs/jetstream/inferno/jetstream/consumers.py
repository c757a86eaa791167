"""Named durable pull consumers, one per service role (e.g. `scheduler`, `executor-<id>`).

A durable keeps its position and unacked messages across restarts, so a service that crashes
picks up where it left off; its name shows what reads the stream (`nats consumer ls`). Creation
is create-or-update: the settings in code win (ack wait, max deliver and the filter can be
updated in place), so a redeploy with a new ack wait needs no manual step.
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy


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
    """Create (or update) the durable `durable` on `stream` and bind a pull subscription to it.

    Acks are explicit: a message not acked within `ack_wait` seconds is redelivered, at most
    `max_deliver` times in all (-1: no limit). Long work should call `msg.in_progress()`.
    """
    config = ConsumerConfig(
        name=durable,
        durable_name=durable,
        filter_subject=filter_subject,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        max_deliver=max_deliver,
        deliver_policy=deliver_policy,
    )
    await js.add_consumer(stream, config=config)
    return await js.pull_subscribe_bind(durable=durable, stream=stream)
