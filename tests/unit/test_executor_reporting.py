"""An executor's outbox (inferno.executor.reporting): finished shards go out together."""

from __future__ import annotations

import asyncio

import pytest

from inferno.events.commands import ShardFinished
from inferno.executor.reporting import Outbox


def report(shard: int) -> ShardFinished:
    return ShardFinished(executor_id="e", pipeline_id=1, shard=shard, attempt=1)


class Sent:
    def __init__(self, error: Exception | None = None) -> None:
        self.batches: list[list[int]] = []
        self.error = error

    async def __call__(self, reports: list[ShardFinished]) -> None:
        await asyncio.sleep(0)
        if self.error is not None:
            raise self.error
        self.batches.append([r.shard for r in reports])


async def parked(task: asyncio.Task[None]) -> None:
    """One turn of the loop runs a new task up to its first wait: no clock involved."""
    await asyncio.sleep(0)
    assert not task.done()


async def test_shards_finishing_while_others_run_go_out_in_one_message():
    sent, busy = Sent(), [2]
    outbox = Outbox(sent, lambda: busy[0], linger_s=60.0)
    busy[0] = 1  # shard 0 finished, shard 1 still runs
    first = asyncio.create_task(outbox.finished(report(0)))
    await parked(first)
    assert sent.batches == []
    busy[0] = 0
    await outbox.finished(report(1))  # the last one sends both
    await first
    assert sent.batches == [[0, 1]]


async def test_a_report_waits_no_longer_than_the_linger():
    sent = Sent()
    outbox = Outbox(sent, lambda: 1, linger_s=0.05)  # another shard runs on and on
    await outbox.finished(report(0))
    await outbox.finished(report(1))
    assert sent.batches == [[0], [1]]


async def test_an_error_or_abort_sends_what_waits_when_nothing_else_runs():
    sent, busy = Sent(), [1]
    outbox = Outbox(sent, lambda: busy[0], linger_s=60.0)
    waiting = asyncio.create_task(outbox.finished(report(0)))
    await parked(waiting)
    busy[0] = 0  # the other shard errored; its report went out alone
    await outbox.settle()
    await waiting
    assert sent.batches == [[0]]


async def test_a_failed_send_fails_every_report_in_it():
    busy = [1]
    outbox = Outbox(Sent(error=RuntimeError("log unavailable")), lambda: busy[0], 60.0)
    first = asyncio.create_task(outbox.finished(report(0)))
    await parked(first)
    busy[0] = 0
    with pytest.raises(RuntimeError, match="log unavailable"):
        await outbox.finished(report(1))
    with pytest.raises(RuntimeError, match="log unavailable"):
        await first
