"""The arithmetic of a fleet-wide rate limit (pure; `fleet_limits` keeps it in JetStream KV).

One limit (a pipeline's rpm/tpm, or an endpoint's that several pipelines share) is one `Ledger`:
the leases granted lately, each (granted at, holder, requests, tokens, good until). A lease lets
its holder start requests until it runs out, so the server counts each of them at some moment in
[granted, until]. Hence the rule of `grant`: a lease fits at `now` when it and every lease still
good after `now - window_s` stay within the limit. Take any window of the server's and, of the
leases whose requests it counts, the one written last: when it was granted, every other one was
in the ledger and good after its grant time minus the window (their requests arrive in the
window, which its grant precedes), so it counted them all. No window of `window_s` counts more
than the limit, however executors interleave (tests/unit/test_fleet_window.py). Each holder
picks its leases' life (a slow store calls for longer ones); the rule does not care.

A holder gives back what it did not use with `trim` (tokens a request reserved and did not use,
a lease it dropped half full, requests that never reached the server): amounts only shrink
toward what the server may have counted, so the rule still holds. A crashed holder trims
nothing: its last lease counts in full until it ages out of the ledger.

Times are wall-clock seconds from the holders' clocks (NTP keeps hosts within milliseconds; a
lease stamped ahead by skew only stays in the ledger longer).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import msgspec


class Lease(msgspec.Struct, array_like=True, gc=False):
    at: float  # when it was granted
    holder: str  # "<executor id>.<lease number>": unique, so a trim finds its own lease
    requests: int
    tokens: int
    until: float  # requests may reach the server until then


class Ledger(msgspec.Struct, gc=False):
    leases: list[Lease] = []
    horizon_s: float = 0.0  # the longest window any holder counts over


class Limits(NamedTuple):
    rpm: int | None  # requests per window; None: not limited
    tpm: int | None  # tokens per window
    window_s: float


class Ask(NamedTuple):
    requests: int  # what the holder would like for the next lease
    tokens: int
    need_tokens: int  # the least worth having: the head request's reservation


class Decision(NamedTuple):
    ledger: Ledger  # the ledger to store (the same object when nothing changed)
    lease: Lease | None  # None: not even `need_tokens` and one request fit now
    retry_in_s: float  # when it was refused: seconds until it would fit, as far as known


def used(ledger: Ledger) -> tuple[int, int]:
    """(requests, tokens) the ledger counts."""
    leases = ledger.leases
    return sum(lease.requests for lease in leases), sum(lease.tokens for lease in leases)


def trim(ledger: Ledger, holder: str, requests: int, tokens: int) -> Ledger:
    """`holder`'s lease less what it gives back (never below zero); a lease already aged out
    of the ledger has nothing left to give back."""
    leases = []
    for lease in ledger.leases:
        if lease.holder == holder:
            lease = Lease(
                lease.at,
                holder,
                max(lease.requests - requests, 0),
                max(lease.tokens - tokens, 0),
                lease.until,
            )
        leases.append(lease)
    return Ledger(leases, ledger.horizon_s)


def grant(
    ledger: Ledger, now: float, holder: str, ask: Ask, limits: Limits, lease_s: float
) -> Decision:
    """A lease good for `lease_s` of as much of `ask` as fits at `now` (module docs), with at
    least one request and `need_tokens` (cut to `tpm`: a larger request waits for an empty
    window), or none."""
    horizon = max(ledger.horizon_s, limits.window_s)
    kept = [lease for lease in ledger.leases if lease.until > now - horizon]  # others' windows
    live = Ledger([lease for lease in kept if lease.until > now - limits.window_s])
    requests, tokens = used(live)
    free_requests = math.inf if limits.rpm is None else limits.rpm - requests
    free_tokens = math.inf if limits.tpm is None else limits.tpm - tokens
    need = ask.need_tokens if limits.tpm is None else min(ask.need_tokens, limits.tpm)
    if free_requests < 1 or free_tokens < need:
        wait = _until_free(live, now, limits, 1 - free_requests, need - free_tokens)
        return Decision(ledger, None, wait)
    lease = Lease(
        now,
        holder,
        int(min(max(ask.requests, 1), free_requests)),
        int(min(max(ask.tokens, need), free_tokens)),
        now + lease_s,
    )
    return Decision(Ledger([*kept, lease], horizon), lease, 0.0)


def _until_free(
    ledger: Ledger, now: float, limits: Limits, requests: float, tokens: float
) -> float:
    """Seconds until leases worth `requests` and `tokens` have aged out."""
    freed_requests = freed_tokens = 0
    for lease in sorted(ledger.leases, key=lambda lease: lease.until):
        freed_requests += lease.requests
        freed_tokens += lease.tokens
        if freed_requests >= requests and freed_tokens >= tokens:
            return max(lease.until + limits.window_s - now, 0.0)
    return limits.window_s  # only trims could help sooner
