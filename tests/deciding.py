"""Deciding in unit tests as the scheduler does: each message decided against the state, its
events folded into it at once, and kept in order."""

from __future__ import annotations

from typing import Any

from inferno.events import State, decide, evolve


class Decided:
    """A decision state and the log it was folded from; calling it decides one message, with
    the next sequence number as its stream sequence and as the clock."""

    def __init__(self) -> None:
        self.state, self.seq, self.log = State(), 0, []

    def __call__(self, message: Any) -> list[Any]:
        self.seq += 1
        events = decide(self.state, message, now=float(self.seq), seq=self.seq)
        for event in events:
            evolve(self.state, event)
        self.log += events
        return events
