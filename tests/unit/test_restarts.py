"""The launcher's restart policy: quick crashes back off, a long run starts the count again, and
too many quick crashes in a row give up."""

from __future__ import annotations

import pytest

from inferno.client.restarts import Backoff, Verdict, after_crash

POLICY = Backoff(first_s=1.0, cap_s=8.0, quick_s=10.0, give_up_after=6)


def crash_loop(policy: Backoff, crashes: int) -> list[float | None]:
    """The delays after `crashes` crashes in a row, each right after its start."""
    delays, quick = [], 0
    for _ in range(crashes):
        verdict = after_crash(policy, quick, ran_for_s=0.5)
        delays.append(verdict.delay_s)
        quick = verdict.quick_in_a_row
    return delays


def test_quick_crashes_back_off_to_the_cap_then_give_up() -> None:
    assert crash_loop(POLICY, 6) == [1.0, 2.0, 4.0, 8.0, 8.0, None]


def test_a_crash_after_a_long_run_restarts_at_once_and_starts_the_count_again() -> None:
    assert after_crash(POLICY, 5, ran_for_s=3600.0) == Verdict(0, 1.0)
    assert after_crash(POLICY, 5, ran_for_s=9.9) == Verdict(6, None)


def test_give_up_after_one_means_no_restart_of_a_quick_crash() -> None:
    assert crash_loop(Backoff(give_up_after=1), 1) == [None]


@pytest.mark.parametrize(
    "bad",
    [{"first_s": 0}, {"first_s": 9, "cap_s": 8}, {"quick_s": 0}, {"give_up_after": 0}],
)
def test_a_policy_that_cannot_work_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="invalid restart backoff"):
        Backoff(**bad)
