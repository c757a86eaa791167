"""`?at=TIME`: the read model as it was at a moment, to show what people saw when they decided.

The log up to that moment (by the server's time of each message) folded into a fresh
`ReadModel` (`inferno.readmodels`), the same fold the projection keeps current. It costs a read
of both streams up to the moment, so it is for audits, not dashboards.
"""

from __future__ import annotations

import contextlib
from typing import Any

import msgspec

from inferno.api.deps import Gateway
from inferno.api.errors import ApiError
from inferno.audit.query import EPOCH_PATTERN, QueryError, parse_time
from inferno.events import decode_command, decode_event
from inferno.jetstream.scan import Stored, scan
from inferno.readmodels import ReadModel, apply_command, apply_event

AT_PARAMETER = {
    "parameters": [
        {
            "name": "at",
            "in": "query",
            "required": False,
            "description": "answer as of this moment (RFC 3339, or epoch seconds), folded from the"
            " log stored up to it",
            "schema": {
                "anyOf": [
                    {"type": "string", "format": "date-time"},
                    {"type": "string", "pattern": EPOCH_PATTERN},
                ]
            },
        }
    ]
}


async def model_at(gw: Gateway, at: str | None) -> ReadModel:
    """The projection's model when `at` is None, else the log folded up to `at`."""
    if at is None:
        return gw.projection.model
    try:
        until_ns = parse_time(at, "at")
    except QueryError as error:
        raise ApiError(400, f"query parameter 'at': {error.reason}") from None
    model = ReadModel()
    names = gw.names

    def upto(fold: Any) -> Any:
        def visit(message: Stored) -> bool:
            if message.time_ns // 1000 * 1000 > until_ns:  # at the microsecond entries show
                return False
            fold(message)
            return True

        return visit

    def command(message: Stored) -> None:
        with contextlib.suppress(msgspec.DecodeError):  # a newer api's command: skipped, as
            apply_command(model, message.seq, decode_command(message.data))  # the projection does

    def event(message: Stored) -> None:
        apply_event(model, message.seq, decode_event(message.data))

    for stream, subjects, fold in (
        (names.cmd_stream, names.cmd_subjects, command),
        (names.evt_stream, names.evt_subjects, event),
    ):
        await scan(gw.js, stream, upto(fold), subjects=[subjects])
    return model
