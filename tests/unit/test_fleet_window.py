"""The fleet limit's arithmetic on virtual time: leases, partial grants, waits, give-backs, and
the guarantee that no window of the server's counts more than the limit, however executors
interleave."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from inferno.executor.fleet_window import Ask, Ledger, Limits, grant, trim, used

WINDOW = 10.0
LEASE = 0.5


def test_a_lease_takes_what_fits_and_the_next_waits_for_the_window_to_pass() -> None:
    limits = Limits(rpm=10, tpm=1000, window_s=WINDOW)
    first = grant(Ledger(), 0.0, "a.1", Ask(8, 800, 100), limits, LEASE)
    assert first.lease is not None
    assert (first.lease.requests, first.lease.tokens) == (8, 800)
    second = grant(first.ledger, 1.0, "b.1", Ask(8, 800, 100), limits, LEASE)
    assert second.lease is not None
    assert (second.lease.requests, second.lease.tokens) == (2, 200)
    refused = grant(second.ledger, 2.0, "a.2", Ask(1, 100, 100), limits, LEASE)
    assert refused.lease is None
    assert refused.ledger is second.ledger
    assert refused.retry_in_s == WINDOW + LEASE - 2.0  # until the first lease has aged out
    later = grant(second.ledger, WINDOW + LEASE + 0.01, "a.2", Ask(9, 900, 100), limits, LEASE)
    assert later.lease is not None
    assert (later.lease.requests, later.lease.tokens) == (8, 800)


def test_a_lease_is_at_least_one_request_and_the_head_reservation_or_nothing() -> None:
    limits = Limits(rpm=None, tpm=1000, window_s=WINDOW)
    ledger = grant(Ledger(), 0.0, "a.1", Ask(1, 950, 950), limits, LEASE).ledger
    assert grant(ledger, 1.0, "b.1", Ask(1, 100, 100), limits, LEASE).lease is None
    small = grant(ledger, 1.0, "b.1", Ask(5, 500, 40), limits, LEASE).lease
    assert small is not None
    assert small.tokens == 50


def test_a_request_larger_than_tpm_waits_for_an_empty_window_then_takes_it_all() -> None:
    limits = Limits(rpm=None, tpm=1000, window_s=WINDOW)
    busy = grant(Ledger(), 0.0, "a.1", Ask(1, 10, 10), limits, LEASE).ledger
    assert grant(busy, 1.0, "b.1", Ask(1, 5000, 5000), limits, LEASE).lease is None
    alone = grant(Ledger(), 1.0, "b.1", Ask(1, 5000, 5000), limits, LEASE).lease
    assert alone is not None
    assert alone.tokens == 1000


def test_what_is_given_back_is_free_at_once_and_an_aged_lease_has_nothing_to_give() -> None:
    limits = Limits(rpm=None, tpm=1000, window_s=WINDOW)
    ledger = grant(Ledger(), 0.0, "a.1", Ask(10, 1000, 100), limits, LEASE).ledger
    ledger = trim(ledger, "a.1", 4, 600)
    assert used(ledger) == (6, 400)
    assert used(trim(ledger, "a.1", 100, 10_000)) == (0, 0)  # never below zero
    assert used(trim(ledger, "gone.1", 1, 1)) == (6, 400)
    assert used(trim(ledger, "a.1", 0, -50)) == (6, 450)  # a request that used more counts so


def test_leases_stay_as_long_as_the_longest_window_of_any_holder_needs_them() -> None:
    short, long = Limits(None, 100, 1.0), Limits(None, 100, WINDOW)
    ledger = grant(Ledger(), 0.0, "long.1", Ask(1, 100, 100), long, LEASE).ledger
    ledger = grant(ledger, 5.0, "short.1", Ask(1, 10, 10), short, LEASE).ledger
    assert [lease.holder for lease in ledger.leases] == ["long.1", "short.1"]
    assert grant(ledger, 6.0, "long.2", Ask(1, 10, 10), long, LEASE).lease is None


def test_a_lease_used_to_its_last_moment_still_counts_in_the_next_window() -> None:
    """Requests of a lease may arrive up to `LEASE` after it was granted: a lease granted a
    window after it must still see it."""
    limits = Limits(rpm=10, tpm=None, window_s=WINDOW)
    ledger = grant(Ledger(), 0.0, "a.1", Ask(10, 10, 1), limits, LEASE).ledger
    assert grant(ledger, WINDOW + 0.01, "b.1", Ask(1, 1, 1), limits, LEASE).lease is None
    assert grant(ledger, WINDOW + LEASE + 0.01, "b.1", Ask(1, 1, 1), limits, LEASE).lease


@dataclass
class Held:
    until: float
    requests: int
    tokens: int


ACTIONS = ("lease", "lease", "send", "send", "send", "give back")
GAPS = (0.0, 0.1, 0.3)  # short steps: leases crowd the edges of windows, where it is tight


@settings(max_examples=150, deadline=None)
@given(rpm=st.integers(1, 20), tpm=st.none() | st.integers(50, 2000), rng=st.randoms())
def test_no_window_of_the_server_counts_more_than_the_limit(rpm, tpm, rng) -> None:
    """Four executors lease (each with leases of its own life), send within their leases' life
    (each token once) and give back
    what they did not send, in any order: every window of `WINDOW` the server counts (requests
    at the moment they arrive) holds at most rpm requests and tpm tokens. (Steps come from a
    drawn generator: long runs are what it takes to reach the tight edges of windows.)"""
    steps = [
        (rng.choice(ACTIONS), rng.randrange(4), rng.random(), rng.random(), rng.choice(GAPS))
        for _ in range(250)
    ]
    limits = Limits(rpm, tpm, WINDOW)
    ledger, now = Ledger(), 0.0
    held: dict[str, Held] = {}
    leases = 0
    sent: list[tuple[float, int]] = []  # (arrived at the server, tokens)
    for action, executor, amount, transit, gap in steps:
        mine = sorted(name for name in held if name.startswith(f"{executor}."))
        if action == "lease":
            leases += 1
            holder = f"{executor}.{leases}"
            ask_requests = 1 + int(amount * rpm)
            need = 1 + int(amount * (tpm or 400) / 4)
            decision = grant(
                ledger,
                now,
                holder,
                Ask(ask_requests, ask_requests * need, need),
                limits,
                LEASE * (1 + executor) / 2,  # each holder its own lease life
            )
            ledger = decision.ledger
            if decision.lease is not None:
                held[holder] = Held(
                    decision.lease.until, decision.lease.requests, decision.lease.tokens
                )
        elif action == "send" and mine:  # a burst of requests, arriving together
            lease = held[mine[-1]]
            if lease.requests >= 1 and now <= lease.until:
                share = min(1.0, 2 * amount)  # half the time: all that is left
                count = max(1, int(share * lease.requests))
                tokens = int(share * lease.tokens)
                lease.requests -= count
                lease.tokens -= tokens
                arrival = now + transit * (lease.until - now)
                sent += [(arrival, tokens)] + [(arrival, 0)] * (count - 1)
        elif action == "give back" and mine:
            name = mine[int(amount * (len(mine) - 1))]
            lease = held[name]
            requests, tokens = int(amount * lease.requests), int(amount * lease.tokens)
            ledger = trim(ledger, name, requests, tokens)
            lease.requests -= requests
            lease.tokens -= tokens
        now += gap
    for start, _ in sent:
        inside = [tokens for at, tokens in sent if start <= at < start + WINDOW]
        assert len(inside) <= rpm
        assert tpm is None or sum(inside) <= tpm
