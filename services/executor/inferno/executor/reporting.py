"""How an executor's final reports and acks go out: several finished shards in one message.

With `sync_interval: always` every stored message costs nats-server an fsync, so the finished
shards of an executor are reported together (`ShardsFinished`, `inferno.events.batches`):
- `Outbox`: a finished shard's report waits until no other order of this executor is still
  running or waiting for a slot (then the last one to finish sends them all), or until the
  oldest has waited `linger_s`. A run of short shards goes out as one message; a long shard's
  report barely waits. Errored and aborted shards are reported at once, alone.
- `Delivery`: one work message (`WorkBatch`), kept alive while its orders run and acked once
  every one of them has reported, so a crash before that redelivers the whole message (its
  finished shards' reports are then for attempts already decided, which `decide` ignores).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import nats.errors
from nats.aio.msg import Msg

from inferno.events.commands import ShardFinished

ACK_WAIT_S = 30.0
REPORT_LINGER_S = 0.25
SendFinished = Callable[[list[ShardFinished]], Awaitable[None]]


class Outbox:
    """Finished shards' reports, sent together. `busy()`: how many orders of the executor
    have not finished their work yet."""

    def __init__(self, send: SendFinished, busy: Callable[[], int], linger_s: float) -> None:
        self._send, self._busy, self._linger_s = send, busy, linger_s
        self._pending: list[ShardFinished] = []
        self._round: asyncio.Future[None] | None = None

    async def finished(self, report: ShardFinished) -> None:
        """Returns once the report is sent, with whichever others finish meanwhile."""
        self._pending.append(report)
        if self._round is None:
            self._round = asyncio.get_running_loop().create_future()
        mine = self._round
        if self._busy():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(mine), self._linger_s)
        if mine is self._round:  # nobody took this round yet
            await self._flush()
        else:
            await mine

    async def settle(self) -> None:
        """Nothing else will finish soon (an order errored or was aborted): send what waits."""
        if self._pending and not self._busy():
            await self._flush()

    async def _flush(self) -> None:
        reports, done = self._pending, self._round
        self._pending, self._round = [], None
        assert done is not None
        try:
            await self._send(reports)
        except asyncio.CancelledError:
            done.cancel()
            raise
        except Exception as error:
            done.set_exception(error)
            done.exception()  # retrieved: the members waiting on it raise it themselves
            raise
        done.set_result(None)


class Delivery:
    """One work message: kept alive while its orders run, acked once all have reported."""

    def __init__(self, msg: Msg, orders: int) -> None:
        self.msg, self._unreported = msg, orders
        self._keep_alive = asyncio.create_task(_keep_alive(msg))

    async def reported(self) -> None:
        self._unreported -= 1
        if not self._unreported:
            self._keep_alive.cancel()
            await self.msg.ack()

    def abandon(self) -> None:
        """An order will not report (its report failed, or the executor stops): the message is
        no longer kept alive, and is redelivered once its ack wait is over."""
        self._keep_alive.cancel()


async def _keep_alive(msg: Msg) -> None:
    while True:
        await asyncio.sleep(ACK_WAIT_S / 3)
        with contextlib.suppress(nats.errors.Error):
            await msg.in_progress()
