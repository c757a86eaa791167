"""Inferno's domain: commands, events, state, `decide` and `evolve` — pure, no I/O.

The JetStream adapters live in `inferno.jetstream`; nothing here imports `nats`.
"""

from inferno.events.codec import (
    UnknownEvent,
    decode_command,
    decode_event,
    decode_report,
    encode,
    subject_for,
)
from inferno.events.decide import decide
from inferno.events.names import Names
from inferno.events.state import State, evolve, fold, snapshot

__all__ = [
    "Names",
    "State",
    "UnknownEvent",
    "decide",
    "decode_command",
    "decode_event",
    "decode_report",
    "encode",
    "evolve",
    "fold",
    "snapshot",
    "subject_for",
]
