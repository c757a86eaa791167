"""The rpm/tpm limiter on virtual time: reserve and settle, the sliding window, server hints, and
the guarantee that what a server may count in any window stays within the limits."""

from __future__ import annotations

import asyncio
import email.utils
import heapq
import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferno.executor.ratelimit import (
    RateLimiter,
    Reservation,
    backoff_s,
    parse_duration,
    server_hint,
)


class VirtualClock:
    """`now()` and `sleep()` for the limiter; time moves only when the test advances it."""

    def __init__(self) -> None:
        self.t = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.t + seconds, next(self._order), future))
        await future

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking sleepers in order at their own deadlines."""
        end = self.t + seconds
        await settle_tasks()
        while self._sleepers and self._sleepers[0][0] <= end:
            due, _, future = heapq.heappop(self._sleepers)
            self.t = max(self.t, due)
            if not future.done():
                future.set_result(None)
            await settle_tasks()
        self.t = end
        await settle_tasks()

    def next_deadline(self) -> float | None:
        live = [due for due, _, future in self._sleepers if not future.done()]
        return min(live) if live else None


async def settle_tasks() -> None:
    for _ in range(20):  # let woken tasks run as far as they can
        await asyncio.sleep(0)


def limiter(clock: VirtualClock, rpm: int | None, tpm: int | None, window_s: float = 60.0):
    return RateLimiter(rpm, tpm, window_s=window_s, clock=clock.now, sleep=clock.sleep)


async def test_requests_wait_for_the_window_to_slide():
    clock = VirtualClock()
    rl = limiter(clock, rpm=2, tpm=None, window_s=10)
    first = await rl.acquire(1)
    first.settle(1)  # finished at t=0
    await clock.advance(3)
    (await rl.acquire(1)).settle(1)  # finished at t=3
    third = asyncio.ensure_future(rl.acquire(1))
    await clock.advance(6.9)
    assert not third.done()  # t=9.9: both still in the window
    await clock.advance(0.1)
    assert third.done()  # t=10: the first one has left it
    assert rl.usage() == (2, 2)


async def test_settle_refunds_the_unused_reservation():
    clock = VirtualClock()
    rl = limiter(clock, rpm=None, tpm=100)
    big = await rl.acquire(80)  # prompt + max_tokens
    waiting = asyncio.ensure_future(rl.acquire(50))
    await clock.advance(1)
    assert not waiting.done()  # 80 + 50 > 100
    big.settle(30)  # it used 30: 70 are free again at once, no time passes
    await settle_tasks()
    assert waiting.done()
    assert rl.usage() == (2, 80)


async def test_in_flight_requests_never_expire():
    clock = VirtualClock()
    rl = limiter(clock, rpm=1, tpm=None, window_s=5)
    slow = await rl.acquire(1)
    waiting = asyncio.ensure_future(rl.acquire(1))
    await clock.advance(60)
    assert not waiting.done()  # the server may count it whenever it arrives
    slow.settle(1)  # finished at t=60: counts until t=65
    await clock.advance(4.9)
    assert not waiting.done()
    await clock.advance(0.1)
    assert waiting.done()


async def test_cancel_gives_everything_back():
    clock = VirtualClock()
    rl = limiter(clock, rpm=1, tpm=10)
    unsent = await rl.acquire(10)
    waiting = asyncio.ensure_future(rl.acquire(10))
    await settle_tasks()
    unsent.cancel()
    unsent.settle(10)  # a second outcome does nothing
    await settle_tasks()
    assert waiting.done()
    assert rl.usage() == (1, 10)


async def test_pause_holds_every_grant_until_the_hint_passes():
    clock = VirtualClock()
    rl = limiter(clock, rpm=100, tpm=None)
    rl.pause(2.5)
    rl.pause(1.0)  # a shorter pause does not cut the longer one
    waiting = asyncio.ensure_future(rl.acquire(1))
    await clock.advance(2.4)
    assert not waiting.done()
    await clock.advance(0.1)
    assert waiting.done()


async def test_grants_are_first_come_first_served():
    clock = VirtualClock()
    rl = limiter(clock, rpm=None, tpm=100, window_s=10)
    (await rl.acquire(100)).settle(100)
    order: list[str] = []

    async def take(name: str, tokens: int) -> None:
        reservation = await rl.acquire(tokens)
        order.append(name)
        reservation.settle(tokens)

    big = asyncio.ensure_future(take("big", 90))
    await settle_tasks()
    small = asyncio.ensure_future(take("small", 5))
    await clock.advance(10)
    await asyncio.gather(big, small)
    assert order == ["big", "small"]  # the small one did not jump the queue


async def test_a_request_larger_than_tpm_goes_alone():
    clock = VirtualClock()
    rl = limiter(clock, rpm=None, tpm=100, window_s=10)
    (await rl.acquire(10)).settle(10)
    huge = asyncio.ensure_future(rl.acquire(500))
    await clock.advance(9.9)
    assert not huge.done()
    await clock.advance(0.1)
    assert huge.done()


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match="rpm"):
        RateLimiter(0, None)
    with pytest.raises(ValueError, match="window_s"):
        RateLimiter(1, 1, window_s=0)


@settings(max_examples=100, deadline=None)
@given(
    rpm=st.integers(1, 8),
    tpm=st.integers(20, 200),
    jobs=st.lists(
        st.tuples(
            st.integers(1, 60),  # reserved tokens
            st.floats(0, 1),  # fraction of the reservation really used
            st.floats(0, 4),  # latency
            st.floats(0, 2),  # gap before the next request arrives
        ),
        min_size=1,
        max_size=30,
    ),
)
def test_what_the_server_may_count_never_exceeds_the_limits(rpm, tpm, jobs):
    """However requests arrive and whenever they finish: for every grant, the requests the
    server may hold in its window then (granted before, finished within the last window) stay
    within rpm, and their real tokens within tpm."""
    window = 10.0
    log: list[tuple[float, float, int]] = []  # (granted, settled, used)

    async def main() -> None:
        clock = VirtualClock()
        rl = limiter(clock, rpm=rpm, tpm=tpm, window_s=window)

        async def request(reserve: int, used: int, latency: float) -> None:
            reservation: Reservation = await rl.acquire(reserve)
            granted = clock.t
            await clock.sleep(latency)
            reservation.settle(used)
            log.append((granted, clock.t, used))

        tasks = []
        for reserve, fraction, latency, gap in jobs:
            used = min(int(reserve * fraction), tpm)
            tasks.append(asyncio.ensure_future(request(reserve, used, latency)))
            await clock.advance(gap)
        while not all(t.done() for t in tasks):
            deadline = clock.next_deadline()
            await clock.advance(max((deadline or clock.t) - clock.t, 0.01))
        await asyncio.gather(*tasks)

    asyncio.run(main())
    for at, _, _ in log:
        held = [(g, s, u) for g, s, u in log if g <= at and s > at - window + 1e-9]
        assert len(held) <= rpm
        big_alone = len(held) == 1  # a reservation above tpm may run alone
        assert big_alone or sum(u for _, _, u in held) <= tpm


def test_server_hints():
    assert server_hint(429, {"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert server_hint(429, {"retry-after": "2"}) == 2.0
    date = email.utils.formatdate(1_800_000_010, usegmt=True)
    assert server_hint(429, {"retry-after": date}, now=1_800_000_000) == 10
    resets = {"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s"}
    assert server_hint(429, resets) == 360
    assert server_hint(429, {}) is None
    assert server_hint(503, {"retry-after": "3"}) == 3
    spent = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "250ms"}
    assert server_hint(200, spent) == 0.25
    assert server_hint(200, {**spent, "x-ratelimit-remaining-requests": "7"}) is None
    assert server_hint(500, {"retry-after": "3"}) is None


def test_durations():
    assert parse_duration("1.5") == 1.5
    assert parse_duration("20ms") == 0.02
    assert parse_duration("1h2m3.5s") == 3723.5
    assert parse_duration("soon") is None
    assert parse_duration("1s later") is None


def test_backoff_grows_is_capped_and_jittered():
    rng = random.Random(1)
    draws = [backoff_s(a, base_s=0.5, max_s=4, uniform=rng.uniform) for a in (1, 2, 3, 10)]
    assert all(d >= 0 for d in draws)
    assert [d <= cap for d, cap in zip(draws, (0.5, 1, 2, 4), strict=True)] == [True] * 4
    assert backoff_s(3, base_s=0.5, max_s=4, uniform=lambda lo, hi: hi) == 2.0
