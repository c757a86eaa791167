"""Client-side rpm/tpm limiting for rate-limited endpoints (DESIGN §5), and the server's hints.

This is the per-engine limiter: limits hold per executor. It is what `INFERNO_RATE_LIMITS=
executor` selects (and what an engine with no limits keeps, doing nothing); the default holds
them across the fleet (`fleet_limits`), with the same interface.

`RateLimiter` keeps a sliding window of `window_s` seconds (60 for real endpoints; tests and
benchmarks shrink it). A request first `acquire`s one request and the most tokens it can use
(prompt + max_tokens); once answered it `settle`s with the tokens it really used, and the rest is
free again at once. The window holds the requests in flight at their reserved size, which never
expire, and the settled ones stamped with the time they *finished*: the server counted them at
some moment before that, so the limiter never frees a slot before the server does. Hence the
guarantee the unit tests check: in any window, the requests the server may count as one minute's
are at most `rpm`, and their tokens at most `tpm` (as far as each request's usage fits its
reservation; a request that used more is logged at what it used).

Grants are first come, first served (a request needing many tokens is not starved by small
ones). `pause(s)` stops every grant for `s` seconds: the caller passes what the server said
(`server_hint`: Retry-After, x-ratelimit-reset-*) when it answers 429 anyway, which happens
when other clients share the quota or the server counts differently.

The clock and sleep are injected, so the tests run on virtual time.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from inferno.executor import metrics

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class Reservation:
    """One granted request; `settle` or `cancel` it exactly once (later calls do nothing)."""

    __slots__ = ("_limiter", "_open", "tokens")

    def __init__(self, limiter: RateLimiter, tokens: int) -> None:
        self._limiter, self.tokens, self._open = limiter, tokens, True

    def settle(self, used_tokens: int) -> None:
        """The server answered (success or error): the request counts, with the tokens it used."""
        if self._open:
            self._open = False
            self._limiter._finish(self.tokens, used_tokens)

    def cancel(self) -> None:
        """The request never reached the server: give back everything it reserved."""
        if self._open:
            self._open = False
            self._limiter._finish(self.tokens, None)


class RateLimiter:
    def __init__(
        self,
        rpm: int | None,
        tpm: int | None,
        *,
        window_s: float = 60.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        for name, limit in (("rpm", rpm), ("tpm", tpm)):
            if limit is not None and limit < 1:
                raise ValueError(f"{name} must be at least 1, not {limit}")
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0, not {window_s}")
        self.rpm, self.tpm, self.window_s = rpm, tpm, window_s
        self._clock, self._sleep = clock, sleep
        self._settled: deque[tuple[float, int]] = deque()  # (finished at, tokens used)
        self._settled_tokens = 0
        self._in_flight = 0
        self._in_flight_tokens = 0
        self._paused_until = -math.inf
        self._turn = asyncio.Lock()  # FIFO: only the head of the queue waits for capacity
        self._changed = asyncio.Event()  # set when capacity returns early (settle, cancel)

    async def acquire(self, tokens: int) -> Reservation:
        """Wait until one more request of `tokens` fits the window, then hold it. A request
        larger than `tpm` waits for an empty window (the server then decides)."""
        async with self._turn:
            waited_from = None
            while (delay := self._delay(tokens)) > 0:
                waited_from = self._clock() if waited_from is None else waited_from
                self._changed.clear()
                await self._wait(delay)
            if waited_from is not None:
                metrics.rate_limited(self._clock() - waited_from)
            self._in_flight += 1
            self._in_flight_tokens += tokens
            return Reservation(self, tokens)

    def pause(self, seconds: float) -> None:
        """Grant nothing for `seconds` from now (a longer pause already running stands)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    def usage(self) -> tuple[int, int]:
        """(requests, tokens) in the window now, in flight included."""
        self._expire(self._clock())
        return (
            self._in_flight + len(self._settled),
            self._in_flight_tokens + self._settled_tokens,
        )

    # internals

    def _finish(self, reserved: int, used: int | None) -> None:
        self._in_flight -= 1
        self._in_flight_tokens -= reserved
        if used is not None:
            self._settled.append((self._clock(), used))
            self._settled_tokens += used
        self._changed.set()

    def _expire(self, now: float) -> None:
        settled = self._settled
        while settled and settled[0][0] <= now - self.window_s:
            self._settled_tokens -= settled.popleft()[1]

    def _delay(self, tokens: int) -> float:
        """Seconds until the request fits; 0 if it fits now, inf if only a settle can help."""
        now = self._clock()
        self._expire(now)
        delay = self._paused_until - now
        if self.rpm is not None:
            excess = self._in_flight + len(self._settled) + 1 - self.rpm
            delay = max(delay, self._expiry_delay(now, excess, by_tokens=False))
        if self.tpm is not None:
            need = min(tokens, self.tpm)
            excess = self._in_flight_tokens + self._settled_tokens + need - self.tpm
            delay = max(delay, self._expiry_delay(now, excess, by_tokens=True))
        return max(delay, 0.0)

    def _expiry_delay(self, now: float, excess: int, *, by_tokens: bool) -> float:
        """Seconds until settled entries worth `excess` (requests or tokens) leave the window."""
        if excess <= 0:
            return 0.0
        freed = 0
        for finished_at, used in self._settled:
            freed += used if by_tokens else 1
            if freed >= excess:
                return finished_at + self.window_s - now
        return math.inf  # what is in flight has to settle first

    async def _wait(self, delay: float) -> None:
        changed = asyncio.ensure_future(self._changed.wait())
        waiters: set[asyncio.Future[Any]] = {changed}
        if delay < math.inf:
            waiters.add(asyncio.ensure_future(self._sleep(delay)))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()


# server hints

_DURATION = re.compile(r"(\d+(?:\.\d*)?)(ms|h|m|s)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float | None:
    """Seconds in a rate-limit reset header: `"1.5"`, `"20ms"`, `"6m0s"`, `"1h2m3.5s"`."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        return None
    return sum(float(number) * _UNIT_S[unit] for number, unit in parts)


def server_hint(
    status: int, headers: Mapping[str, str], *, now: float | None = None
) -> float | None:
    """How long the server asks everyone to wait, in seconds, or None if it does not say.

    On 429 (and 503): `retry-after-ms`, then `retry-after` (seconds or an HTTP date), then the
    later of `x-ratelimit-reset-requests` / `-tokens`. On success: a reset time only when the
    matching `x-ratelimit-remaining-*` is 0 (the next request would be refused).
    `headers` must look names up case-insensitively (httpx headers do)."""
    if status in (429, 503):
        if (ms := _number(headers.get("retry-after-ms"))) is not None:
            return max(ms / 1000, 0.0)
        if (after := headers.get("retry-after")) is not None:
            seconds = _number(after)
            if seconds is None:
                try:
                    moment = email.utils.parsedate_to_datetime(after).timestamp()
                except (TypeError, ValueError):
                    moment = None
                wall = time.time() if now is None else now
                seconds = None if moment is None else moment - wall
            if seconds is not None:
                return max(seconds, 0.0)
        resets = [_reset(headers, kind) for kind in ("requests", "tokens")]
        known = [r for r in resets if r is not None]
        return max(known) if known else None
    if 200 <= status < 300:
        exhausted = [
            _reset(headers, kind)
            for kind in ("requests", "tokens")
            if _number(headers.get(f"x-ratelimit-remaining-{kind}")) == 0
        ]
        known = [r for r in exhausted if r is not None]
        return max(known) if known else None
    return None


def _reset(headers: Mapping[str, str], kind: str) -> float | None:
    value = headers.get(f"x-ratelimit-reset-{kind}")
    return None if value is None else parse_duration(value)


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def backoff_s(
    attempt: int, *, base_s: float, max_s: float, uniform: Callable[[float, float], float]
) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(max_s, base_s * 2^(attempt-1))]
    (attempt counts from 1), so clients that failed together do not retry together."""
    return uniform(0.0, min(max_s, base_s * 2 ** (attempt - 1)))
