"""Bounded reads from an ephemeral pull consumer: what `replay` and `scan` are made of.

What a read holds at once is bounded in messages and in bytes, whatever the messages weigh: it
keeps `in_flight` pull requests open (one more for a moment), each for at most `batch` messages
and `request_bytes` bytes. nats-py drops what passes a subscription's pending limits (64 MiB by
default) as a slow consumer, and a read that lost a message waited for it forever: replaying
INFERNO_EXEC after 19,200 shards (9,610 reports of 25 KB each, two requests of 2,000 open) did.
With `max_bytes` set the server ends every request with a status: `409 Batch Completed` (its
count), `409 Message Size Exceeds MaxBytes` (its bytes), `404 No Messages` (nothing more now) or
`408 Requests Pending` (refused: the open ones already claim what is left), so the reader knows
how many are open although the server interleaves their messages (in stream order, one inbox).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, Header

Visit = Callable[[Msg], bool]
"""visit(msg) for each stored message, in stream order; False ends the read."""

MIN_REQUEST_BYTES = 8 * 1024 * 1024
NO_RESPONDERS_RETRY_S = 0.05
NO_RESPONDERS_GIVE_UP_S = 15.0
_COUNT_REACHED = "Batch Completed"
_BYTES_REACHED = "Message Size Exceeds MaxBytes"
_UNSERVED = "Nats-Pending-Messages"  # of a request that ended: how many it did not get


def request_bytes(max_payload: int) -> int:
    """Twice the largest message the server takes, at least: a request whose first message does
    not fit delivers nothing, and the read could not go on."""
    return max(MIN_REQUEST_BYTES, 2 * max_payload)


async def pull_all(
    js: JetStreamContext,
    stream: str,
    config: ConsumerConfig,
    visit: Visit,
    *,
    batch: int,
    in_flight: int,
) -> None:
    """Hand `visit` the messages `config` selects until it returns False or none is left now.
    The consumer lives in memory, without acks, and is deleted after (or 30 s after its reader
    is gone). An exception from `visit` ends the read and propagates."""
    config.ack_policy = AckPolicy.NONE
    config.mem_storage = True
    config.inactive_threshold = 30.0
    consumer = await js.add_consumer(stream, config=config)
    nc = js._nc
    most = request_bytes(nc.max_payload)
    request = json.dumps({"batch": batch, "max_bytes": most, "no_wait": True}).encode()
    next_subject = f"{js._prefix}.CONSUMER.MSG.NEXT.{stream}.{consumer.name}"
    inbox = nc.new_inbox()
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    give_up_at = loop.time() + NO_RESPONDERS_GIVE_UP_S
    open_requests = since_asked = 0
    exhausted = False  # a request found nothing more: asking again would find nothing too

    async def ask() -> None:
        nonlocal open_requests, since_asked
        open_requests, since_asked = open_requests + 1, 0
        await nc.publish(next_subject, request, reply=inbox)

    async def on_message(msg: Msg) -> None:
        nonlocal since_asked
        if done.done():
            return
        if not msg.reply:  # a status: one request is over, or was not heard
            await on_status(msg.headers or {})
            return
        try:
            more = visit(msg)
        except Exception as error:
            done.set_exception(error)
            return
        if not more:
            done.set_result(None)
            return
        since_asked += 1
        # a request's worth read: ask now, while the rest of what was sent waits here; asking
        # only on a status would leave the server idle (they come last: requests interleave)
        if since_asked >= batch and open_requests <= in_flight and not exhausted:
            await ask()

    async def on_status(headers: dict[str, str]) -> None:
        nonlocal open_requests, exhausted
        status, description = headers.get(Header.STATUS), headers.get(Header.DESCRIPTION, "")
        open_requests -= 1
        if status == "503":
            # no responders: in a cluster the new consumer may lead on another node, and this
            # server has not learnt of its interest yet. Ask again; ending here lost the read.
            if loop.time() > give_up_at:
                done.set_exception(TimeoutError(f"{stream}: its consumer never answered"))
                return
            await asyncio.sleep(NO_RESPONDERS_RETRY_S)
            await ask()
        elif status == "409" and description in (_COUNT_REACHED, _BYTES_REACHED):
            if description == _BYTES_REACHED and headers.get(_UNSERVED) == str(batch):
                done.set_exception(RuntimeError(f"{stream} holds a message over {most} bytes"))
            elif open_requests < in_flight and not exhausted:
                await ask()  # there may be more
        elif status == "404":  # no more messages match now
            exhausted = True
        elif status != "408":  # 408 Requests Pending: what is left is the open requests' already
            done.set_exception(RuntimeError(f"{stream}: pull request ended {status} {description}"))
        if open_requests == 0 and not done.done():
            if exhausted:
                done.set_result(None)
            else:
                await ask()  # the last one open ended with more to read: a 404 ends it all

    limit = in_flight + 2  # the requests open at most, and one more's worth of slack
    sub = await nc.subscribe(
        inbox, cb=on_message, pending_msgs_limit=limit * batch, pending_bytes_limit=limit * most
    )
    try:
        for _ in range(in_flight):
            await ask()
        await done
    finally:
        await sub.unsubscribe()
        with contextlib.suppress(Exception):
            await js.delete_consumer(stream, consumer.name)
