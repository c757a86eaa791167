"""When the launcher restarts a crashed child, and when it gives up on one (pure: no clock, the
caller passes how long the run lasted).

A child that ran for a while before it died is restarted soon; one that keeps dying right after it
starts (a port taken, a broken config) waits longer each time, and after a few such crashes in a
row the launcher stops trying and says so, instead of spinning forever.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Restart delays: `first_s`, doubling per quick crash in a row, at most `cap_s`."""

    first_s: float = 1.0
    cap_s: float = 8.0
    quick_s: float = 10.0  # a run shorter than this counts as a crash at start
    give_up_after: int = 6  # quick crashes in a row

    def __post_init__(self) -> None:
        if not (0 < self.first_s <= self.cap_s and self.quick_s > 0 and self.give_up_after >= 1):
            raise ValueError(f"invalid restart backoff: {self}")


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do about one crash: restart after `delay_s`, or give up (`delay_s` is None)."""

    quick_in_a_row: int
    delay_s: float | None


def after_crash(policy: Backoff, quick_in_a_row: int, ran_for_s: float) -> Verdict:
    """The verdict on a child that died after running `ran_for_s`, given how many quick crashes
    came right before this run. A run that lasted `quick_s` starts the count again."""
    quick = quick_in_a_row + 1 if ran_for_s < policy.quick_s else 0
    if quick >= policy.give_up_after:
        return Verdict(quick, None)
    return Verdict(quick, min(policy.first_s * 2 ** max(quick - 1, 0), policy.cap_s))
