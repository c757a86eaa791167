"""Rate limits that hold across the fleet (DESIGN §5): leases from ledgers in JetStream KV.

Each limit a request is held to (its pipeline's rpm/tpm, an endpoint limit it shares) is a
`fleet_window.Ledger` under one key of the LIMITS bucket, changed by compare-and-set. An engine's
`FleetRateLimiter` leases a batch of permits (one CAS per limit) and grants its requests from it
locally: a request takes one request and its reservation (prompt + max_tokens); when it settles,
the tokens it did not use go back to the batch while the batch is still good, else to the
ledger. A batch is good for `lease_s` (a fraction of the window), longer while the store is
slow to answer (four round trips), never more than a third of the executor's heartbeat TTL;
what is left when it is dropped or runs out is given back at the next CAS. So a crashed
executor costs the fleet at most its last batch, counted until that batch ages out of the
window, and holds nothing once its lease has run out.

`pause(s)` after a 429 stops this engine's grants, as the per-executor limiter does.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import nats.errors
import structlog

from inferno.events.model import PipelineSpec
from inferno.events.names import Names
from inferno.executor import metrics
from inferno.executor.fleet_ledgers import FleetLimit, Ledgers, config_digest, lease_seconds
from inferno.executor.fleet_window import Ask, Decision, Ledger, Limits, grant, trim
from inferno.executor.ratelimit import Clock, Sleep

_log = structlog.get_logger(__name__)

USABLE = 0.75  # of a lease's life: requests start early enough to reach the server within it
SHARE = 16  # a lease asks for at most 1/SHARE of a window, so others get a turn


@dataclass(frozen=True, slots=True)
class FleetRates:
    """What an executor's engines lease from: the LIMITS bucket, and who is asking."""

    ledgers: Ledgers
    names: Names
    executor_id: str
    heartbeat_ttl_s: float

    def limits_for(self, spec: PipelineSpec, window_s: float) -> list[FleetLimit]:
        """The limits a pipeline's requests are held to: the endpoint limit it names (first:
        the one most shared), then its own rpm / tpm."""
        limits = []
        if (shared := spec.endpoint_limit) is not None:
            key = self.names.endpoint_limit_key(shared.name)
            limits.append(FleetLimit(key, Limits(shared.rpm_limit, shared.tpm_limit, window_s)))
        if spec.rpm_limit is not None or spec.tpm_limit is not None:
            key = self.names.config_limit_key(config_digest(spec))
            limits.append(FleetLimit(key, Limits(spec.rpm_limit, spec.tpm_limit, window_s)))
        return limits

    def limiter(self, limits: Sequence[FleetLimit], window_s: float) -> FleetRateLimiter:
        """A limiter for one engine; its holder names are unique to it (a restarted executor
        with the same id must never trim a lease of its earlier life)."""
        return FleetRateLimiter(
            self.ledgers,
            limits,
            holder=f"{self.executor_id}.{os.urandom(4).hex()}",
            lease_s=lease_seconds(window_s, self.heartbeat_ttl_s),
            max_lease_s=self.heartbeat_ttl_s / 3,
        )


@dataclass(eq=False)
class _Batch:
    holder: str
    usable_until: float
    requests: int
    tokens: int
    granted_requests: int


@dataclass(eq=False)
class FleetPermit:
    """One granted request; `settle` or `cancel` it exactly once (later calls do nothing)."""

    _limiter: FleetRateLimiter
    _batch: _Batch
    tokens: int
    _open: bool = field(default=True)

    def settle(self, used_tokens: int) -> None:
        """The server answered: the request counts, with the tokens it used."""
        if self._open:
            self._open = False
            self._limiter._give_back(self._batch, 0, self.tokens - used_tokens)

    def cancel(self) -> None:
        """The request never reached the server: give back all it took."""
        if self._open:
            self._open = False
            self._limiter._give_back(self._batch, 1, self.tokens)


class FleetRateLimiter:
    """The `ratelimit.RateLimiter` interface (acquire, settle, cancel, pause) over leases."""

    def __init__(
        self,
        ledgers: Ledgers,
        limits: Sequence[FleetLimit],
        *,
        holder: str,
        lease_s: float,
        max_lease_s: float | None = None,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not limits:
            raise ValueError("a fleet limiter needs at least one limit")
        self._ledgers, self._limits, self._holder = ledgers, list(limits), holder
        self.lease_s, self._clock, self._sleep = lease_s, clock, sleep
        self._max_lease_s = max(lease_s, max_lease_s or lease_s)
        self._round_trip_s = 0.0  # of a lease's CAS, smoothed: a batch must outlive a few
        self._batch: _Batch | None = None
        self._leases = 0
        self._owed: dict[str, dict[str, tuple[int, int]]] = {}  # key -> holder -> given back
        self._last_used = 0
        self._waiting = 0
        self._paused_until = -math.inf
        self._turn = asyncio.Lock()  # FIFO: only the head of the queue waits for capacity
        caps = [limit.tpm for _, limit in self._limits if limit.tpm is not None]
        self._max_tokens = min(caps) if caps else None

    async def acquire(self, tokens: int) -> FleetPermit:
        """Wait until the fleet has room for one more request of `tokens` (a request larger
        than the smallest tpm takes a whole window; the server then decides)."""
        need = tokens if self._max_tokens is None else min(tokens, self._max_tokens)
        self._waiting += 1
        try:
            async with self._turn:
                waited_from = None
                while True:
                    delay = await self._take_or_wait(need)
                    if _cancelled():  # a cancel that a KV request lost
                        raise asyncio.CancelledError
                    if delay <= 0:
                        break
                    waited_from = self._clock() if waited_from is None else waited_from
                    await self._sleep(delay)
                if waited_from is not None:
                    metrics.rate_limited(self._clock() - waited_from)
                batch = self._batch
                assert batch is not None
                batch.requests -= 1
                batch.tokens -= need
                return FleetPermit(self, batch, need)
        finally:
            self._waiting -= 1

    def pause(self, seconds: float) -> None:
        """Grant nothing for `seconds` from now (a longer pause already running stands)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    async def close(self) -> None:
        """Give back the batch and whatever is owed now, rather than at a next lease."""
        if self._batch is not None:
            self._drop(self._batch)
        for key, _ in self._limits:
            if owed := self._owed.pop(key, None):

                def give_back(ledger: Ledger, owed: dict[str, tuple[int, int]] = owed) -> Decision:
                    return Decision(_trimmed(ledger, owed), None, 0.0)

                with contextlib.suppress(nats.errors.Error):  # best effort: it ages out anyway
                    await self._ledgers.change(key, give_back)

    # internals

    async def _take_or_wait(self, need: int) -> float:
        """0 when the batch now holds a request of `need`, else seconds to wait."""
        now = self._clock()
        if now < self._paused_until:
            return self._paused_until - now
        if self._batch is not None:
            if self._holds(self._batch, now, need):
                return 0.0
            self._drop(self._batch)
        try:
            wait = await self._lease(now, need)
            self._round_trip_s = 0.7 * self._round_trip_s + 0.3 * (self._clock() - now)
        except nats.errors.Error as error:  # disconnected: the client reconnects; ask again
            if _cancelled():
                raise asyncio.CancelledError from error
            _log.warning("rate-limit lease failed", error=repr(error))
            return self.lease_s
        if wait == 0 and self._batch is not None and self._holds(self._batch, self._clock(), need):
            return 0.0
        return min(wait, self.lease_s) or 0.001  # 0.001: the lease took too long to be of use

    @staticmethod
    def _holds(batch: _Batch, now: float, need: int) -> bool:
        return now < batch.usable_until and batch.requests >= 1 and batch.tokens >= need

    async def _lease(self, now: float, need: int) -> float:
        """Lease a batch from every limit in turn; 0 when granted, else seconds to wait."""
        self._leases += 1
        holder = f"{self._holder}.{self._leases}"
        ask = self._ask(need)
        life = min(self._max_lease_s, max(self.lease_s, 4 * self._round_trip_s))
        granted: list[tuple[str, int, int]] = []
        for key, limits in self._limits:
            owed = self._owed.pop(key, {})
            change = _granting(owed, now, holder, ask, limits, life)
            decision = await self._ledgers.change(key, change)
            if decision.lease is None:
                for earlier, requests, tokens in granted:  # what the others granted goes back
                    self._owe(earlier, holder, requests, tokens)
                return max(decision.retry_in_s, 0.001)
            lease = decision.lease
            granted.append((key, lease.requests, lease.tokens))
            ask = Ask(lease.requests, lease.tokens, need)
        requests, tokens = ask.requests, ask.tokens
        for key, got_requests, got_tokens in granted[:-1]:  # a later limit granted less
            self._owe(key, holder, got_requests - requests, got_tokens - tokens)
        self._batch = _Batch(holder, now + life * USABLE, requests, tokens, requests)
        return 0.0

    def _ask(self, need: int) -> Ask:
        """As many requests as are waiting, or twice what the last batch used, within a
        1/SHARE of each limit's window."""
        cap = math.inf
        for _, limits in self._limits:
            if limits.rpm is not None:
                cap = min(cap, limits.rpm / SHARE)
            if limits.tpm is not None:
                cap = min(cap, limits.tpm / SHARE / max(need, 1))
        requests = int(max(1, min(cap, max(self._waiting, 2 * self._last_used))))
        return Ask(requests, requests * need, need)

    def _drop(self, batch: _Batch) -> None:
        """Stop using `batch`: what is left of it is owed back to every ledger."""
        self._batch = None
        self._last_used = batch.granted_requests - max(batch.requests, 0)
        self._give_back(batch, batch.requests, batch.tokens)
        batch.requests = batch.tokens = 0

    def _give_back(self, batch: _Batch, requests: int, tokens: int) -> None:
        """Into the batch while it is in use and good, else owed to the ledgers. `tokens` may
        be negative: a request that used more than it reserved counts for what it used."""
        if batch is self._batch and self._clock() < batch.usable_until:
            batch.requests += requests
            batch.tokens += tokens
            return
        for key, _ in self._limits:
            self._owe(key, batch.holder, requests, tokens)

    def _owe(self, key: str, holder: str, requests: int, tokens: int) -> None:
        if requests or tokens:
            owed = self._owed.setdefault(key, {})
            had_requests, had_tokens = owed.get(holder, (0, 0))
            owed[holder] = (had_requests + requests, had_tokens + tokens)


def _cancelled() -> bool:
    """Python 3.11's `wait_for` (under every nats-py request) can lose a cancel: it returns
    the reply that came in with it, or raises TimeoutError for a timeout that raced it, which
    nats-py makes a nats Error. The task is still marked as cancelling, so a retry loop asks
    here and ends instead of leasing forever."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _granting(
    owed: dict[str, tuple[int, int]],
    now: float,
    holder: str,
    ask: Ask,
    limits: Limits,
    lease_s: float,
) -> Callable[[Ledger], Decision]:
    """One CAS of a lease: give back what is owed, then grant what fits."""

    def change(ledger: Ledger) -> Decision:
        return grant(_trimmed(ledger, owed), now, holder, ask, limits, lease_s)

    return change


def _trimmed(ledger: Ledger, owed: dict[str, tuple[int, int]]) -> Ledger:
    for holder, (requests, tokens) in owed.items():
        ledger = trim(ledger, holder, requests, tokens)
    return ledger
