"""Fleet rate limiters over the real LIMITS bucket: several holders share one limit, and a
holder that crashes costs the others at most its last batch."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import nats.errors
import pytest
from nats.js import JetStreamContext

from inferno.events.names import Names
from inferno.executor.fleet_ledgers import FleetLimit, Ledgers
from inferno.executor.fleet_limits import FleetRateLimiter
from inferno.executor.fleet_window import Decision, Ledger, Limits, used
from inferno.jetstream import ensure_log
from inferno.runtime.tasks import cancel_and_wait
from tests.waiting import scaled, until

KEY = "endpoint.shared"


async def ledgers(js: JetStreamContext, names: Names) -> Ledgers:
    await ensure_log(js, names)
    return Ledgers(await js.key_value(names.limits_bucket))


def limiter(store: Ledgers, holder: str, rpm: int, window_s: float) -> FleetRateLimiter:
    limits = [FleetLimit(KEY, Limits(rpm, None, window_s))]
    return FleetRateLimiter(store, limits, holder=holder, lease_s=window_s / 30)


async def test_three_holders_never_grant_more_than_the_limit_in_any_window(
    js: JetStreamContext, names: Names
) -> None:
    store = await ledgers(js, names)
    rpm, window = 12, 1.5
    granted: list[float] = []
    loop = asyncio.get_running_loop()

    async def worker(rl: FleetRateLimiter) -> None:
        while True:
            permit = await rl.acquire(10)
            granted.append(loop.time())
            permit.settle(7)

    holders = [limiter(store, f"ex{i}.x", rpm, window) for i in range(3)]
    tasks = [asyncio.create_task(worker(rl)) for rl in holders for _ in range(4)]
    try:
        await until(lambda: len(granted) >= 3 * rpm, "three windows' worth of grants", 60)
    finally:
        for task in tasks:
            await cancel_and_wait(task)
    for start in granted:
        inside = [at for at in granted if start <= at < start + window]
        assert len(inside) <= rpm, (start, len(inside))


async def test_a_crashed_holder_costs_the_others_at_most_its_last_batch(
    js: JetStreamContext, names: Names
) -> None:
    store = await ledgers(js, names)
    rpm, window = 160, 60.0  # a long window: nothing ages out while the test runs
    crashing = limiter(store, "crashed.x", rpm, window)
    waiting = [asyncio.create_task(crashing.acquire(1)) for _ in range(8)]
    await until(lambda: all(task.done() for task in waiting), "the crashing holder's grants")
    for task in waiting:
        task.cancel()  # its permits are never settled, its limiter never closed
    ledger = await store.read(KEY)
    assert {lease.holder.split(".")[0] for lease in ledger.leases} == {"crashed"}
    assert used(ledger)[0] == 8  # what it took, sent or not: nothing more

    survivor = limiter(store, "survivor.x", rpm, window)
    for _ in range(rpm - 8):  # the rest of the window, without waiting for anything to age out
        (await asyncio.wait_for(survivor.acquire(1), 30)).settle(1)
    assert used(await store.read(KEY))[0] == rpm
    late = asyncio.create_task(survivor.acquire(1))
    await asyncio.sleep(0)  # let it ask: nothing is free until the window has passed
    assert not late.done()
    late.cancel()


async def test_a_holder_that_closes_gives_back_what_it_did_not_use(
    js: JetStreamContext, names: Names
) -> None:
    store = await ledgers(js, names)
    rl = limiter(store, "tidy.x", 160, 60.0)
    permits = await asyncio.gather(*(rl.acquire(10) for _ in range(8)))
    for permit in permits[:3]:
        permit.settle(4)
    for permit in permits[3:]:
        permit.cancel()  # never reached the server
    await rl.close()
    assert used(await store.read(KEY)) == (3, 12)


class LosingLedgers(Ledgers):
    """The real bucket, with the first change losing a cancel the way Python 3.11's
    `wait_for` under nats-py does when the cancel races the reply (`lost`: the reply is
    returned) or a timeout (`timeout`: a nats TimeoutError is raised). The loss is staged,
    since the race itself is a matter of microseconds."""

    def __init__(self, store: Ledgers, loses: str) -> None:
        super().__init__(store._kv)
        self.loses, self.asking = loses, asyncio.Event()

    async def change(self, key: str, change: Callable[[Ledger], Decision]) -> Decision:
        decision = await super().change(key, change)
        if self.asking.is_set():
            return decision
        self.asking.set()
        try:
            await asyncio.Event().wait()  # the reply is in; the cancel arrives now
        except asyncio.CancelledError:
            if self.loses == "timeout":
                raise nats.errors.TimeoutError from None
        return decision


@pytest.mark.parametrize("loses", ["reply", "timeout"])
async def test_a_cancel_lost_inside_a_kv_request_still_ends_the_wait(
    js: JetStreamContext, names: Names, loses: str
) -> None:
    store = LosingLedgers(await ledgers(js, names), loses)
    rl = limiter(store, "cancelled.x", 160, 60.0)
    waiting = asyncio.create_task(rl.acquire(1))
    await asyncio.wait_for(store.asking.wait(), scaled(30))
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiting, scaled(30))  # not a permit, nor leasing forever
    assert waiting.cancelled()
    (await asyncio.wait_for(rl.acquire(1), scaled(30))).settle(1)  # the limiter still works
