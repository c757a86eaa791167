"""Who and why, on every command the api issues (docs/api.md, docs/security.md).

`BearerAuth` (`inferno.api.app`) puts the identity behind the request's token in the scope
(`AUTHENTICATED`); `TraceContext` (`inferno.api.tracing`) its trace id. `Caller`, a dependency
of every write, holds the actor (`recorded_actor` of that identity and of what
`X-Inferno-Actor` says) and the trace id, and `caller.stamp(command, reason)` is the one place
a route's command gets them, with its `issued_at`. None of it decides what a caller may do.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import msgspec
import structlog
from fastapi import Depends, Header, Query, Request
from pydantic import AfterValidator, WithJsonSchema

from inferno.api.errors import ApiError
from inferno.api.tracing import trace_id_of
from inferno.events.commands import MAX_REASON_LENGTH, AnyCommand
from inferno.events.provenance import MAX_ACTOR_LENGTH, check_actor, check_reason, recorded_actor
from inferno.secrets.masking import mask_text

_log = structlog.get_logger(__name__)

ACTOR_HEADER = "X-Inferno-Actor"
AUTHENTICATED = "inferno_identity"
"""Key in the ASGI scope's `state`: the identity of the request's bearer token."""

C = TypeVar("C", bound=AnyCommand)

Reason = Annotated[
    str | None,
    AfterValidator(check_reason),
    WithJsonSchema(
        {"anyOf": [{"type": "string", "maxLength": MAX_REASON_LENGTH}, {"type": "null"}]}
    ),
]
"""A `reason`: optional, at most MAX_REASON_LENGTH characters, kept on one printable line."""

REASON_HELP = (
    f"Why, for the audit trail: at most {MAX_REASON_LENGTH} characters, recorded on one line"
    " (line breaks and tabs become spaces, other control characters are left out) with the"
    " command, and shown in its operation."
)
ReasonQuery = Annotated[Reason, Query(description=REASON_HELP)]
"""`?reason=` on the dispatcher's writes, whose bodies stay the seed's."""


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent the request and which request it is, as the command records them."""

    actor: str | None
    trace_id: str

    def stamp(self, command: C, reason: str | None) -> C:
        """`command` with its actor, reason (credentials in it masked, as in a log line), trace
        id and issue time; logged, so the request's lines say what it asked for and who."""
        reason = None if reason is None else mask_text(reason)
        _log.info("command received", operation=command.operation, actor=self.actor, reason=reason)
        return msgspec.structs.replace(
            command, actor=self.actor, reason=reason, trace_id=self.trace_id, issued_at=time.time()
        )


async def _caller(  # async: a plain `def` dependency would run in a worker thread
    request: Request,
    claim: Annotated[
        str | None,
        Header(
            alias=ACTOR_HEADER,
            description="Who you say you are, e.g. alice@laptop (the CLI and the SDK send the"
            f" OS user and host), printable ASCII, at most {MAX_ACTOR_LENGTH} characters."
            " Recorded with the command, never used to decide what you may do; behind a token"
            " it is recorded after the token's identity.",
            json_schema_extra={"maxLength": MAX_ACTOR_LENGTH, "pattern": "^[ -~]*$"},
        ),
    ] = None,
) -> Caller:
    state: dict[str, Any] = request.scope.get("state") or {}
    try:
        said = None if claim is None else check_actor(claim)
    except ValueError as error:
        raise ApiError(400, f"header '{ACTOR_HEADER}': {error}") from None
    actor = recorded_actor(state.get(AUTHENTICATED), said)
    return Caller(actor=actor, trace_id=trace_id_of(request.scope) or uuid.uuid4().hex)


CallerDep = Annotated[Caller, Depends(_caller)]
