"""Issuing a command: the one write path of both the dispatcher and the /api/v1 routes.

A command is appended to INFERNO_CMD as a single message; its stream sequence is its ic_id.
The answer is read back from the projection (once the CMD tail has folded it), so a client sees
exactly what a later read shows, and a retried Idempotency-Key gets the original operation.
Secrets a request carries are stored in INFERNO_SECRETS and replaced by refs first
(`inferno.api.secrets`), so no command in the log holds one.

Before appending, the projection is asked whether the command can work: an unknown pipeline is a
404 and a transition the projection already shows to be invalid a 409, in the decider's own
words (`decide` runs on the projection, so the rules live in one place). While an earlier
command on the same pipeline is still undecided the projection cannot tell (stop, then resume at
once, is valid), so nothing is refused then. The decider stays the judge: a command that races
another still fails its operation with the reason.
"""

from __future__ import annotations

import hashlib
import time
import uuid

from nats.js.errors import NotFoundError

from inferno.api import secrets, views
from inferno.api.deps import Gateway
from inferno.api.errors import ApiError
from inferno.events import State, decide, encode
from inferno.events.commands import (
    AnyCommand,
    CloneIntoContext,
    ClonePipeline,
    CreateExperiment,
    DeletePipeline,
    ResumePipeline,
    StopPipeline,
)
from inferno.events.events import OperationFailed
from inferno.events.jetstream import Outgoing
from inferno.events.state import Operation

_PIPELINE_ACTIONS: dict[type, str] = {
    StopPipeline: "stop",
    ResumePipeline: "resume",
    DeletePipeline: "delete",
    ClonePipeline: "clone",
}


def msg_id(idempotency_key: str | None) -> str:
    """`Nats-Msg-Id`: derived from the client's key, so a retry is a duplicate the server drops."""
    if idempotency_key is None:
        return uuid.uuid4().hex
    return "idem-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]


def subject(gw: Gateway, command: AnyCommand) -> str:
    names = gw.names
    if isinstance(command, CreateExperiment):
        return names.experiment_cmd(command.experiment_id, "create")
    if isinstance(command, CloneIntoContext):
        return names.context_cmd(command.context_id, "clone")
    return names.pipeline_cmd(command.pipeline_id, _PIPELINE_ACTIONS[type(command)])


def refusal(state: State, command: AnyCommand, last_seen: int) -> ApiError | None:
    """404 for what the command names but the projection lacks; 409 for what `decide` would
    reject in the projection's state (`last_seen`: the last INFERNO_CMD sequence it folded)."""
    if isinstance(command, CreateExperiment):
        return None
    if isinstance(command, CloneIntoContext):
        if command.context_id not in state.contexts:
            return ApiError(404, f"context {command.context_id} not found")
        return None
    if command.pipeline_id not in state.pipelines:
        return ApiError(404, f"pipeline {command.pipeline_id} not found")
    if _undecided(state, command.pipeline_id, last_seen):
        return None  # the projection is about to change: only the decider can judge now
    for event in decide(state, command, now=time.time(), seq=state.last_command_seq + 1):
        if isinstance(event, OperationFailed):
            return ApiError(409, event.error)
    return None


def _undecided(state: State, pipeline_id: int, last_seen: int) -> bool:
    """Whether an earlier command on this pipeline is still waiting for the scheduler. It
    decides commands in ic_id order, so only those after the last decided one can be waiting."""
    for ic_id in range(state.last_command_seq + 1, last_seen + 1):
        op = state.operations.get(ic_id)
        if op is not None and op.pipeline_id == pipeline_id and op.status == "pending":
            return True
    return False


async def submit(
    gw: Gateway, command: AnyCommand, *, idempotency_key: str | None, wait: float
) -> Operation:
    """Append `command` (unless it is refused or a retry), and return its operation as the
    projection shows it: once final if `wait` > 0 and it gets there in time."""
    projection = gw.projection
    message_id = msg_id(idempotency_key)
    where = subject(gw, command)
    refused = refusal(projection.state, command, projection.cmd_seq)
    if refused is not None:
        # a retry of a command that has taken effect since is refused now: answer the original
        ic_id = await _earlier(gw, where, message_id) if idempotency_key else None
        if ic_id is None:
            raise refused
    else:
        command = await secrets.protect(gw, command)  # before anything is appended
        outgoing = Outgoing(where, encode(command), message_id)
        ic_id = (await gw.appender.append(gw.names.cmd_stream, [outgoing])).first_seq
    # with ?wait, the scheduler's outcome usually folds before the command's own echo does
    op = await projection.wait_for_operation(ic_id, wait) if wait > 0 else None
    if op is None and not await projection.wait_for_command(ic_id):
        raise ApiError(
            503, f"command stored as ic_id {ic_id}, but the projection is behind; retry the read"
        )
    op = projection.state.operations[ic_id]
    if idempotency_key is not None and not _same_request(op, command):
        raise ApiError(
            409,
            f"Idempotency-Key was already used for another request: ic_id {ic_id}, "
            f"{views.describe(op)}",
        )
    return op


def _same_request(op: Operation, command: AnyCommand) -> bool:
    return op.operation == command.operation and op.pipeline_id == getattr(
        command, "pipeline_id", None
    )


async def _earlier(gw: Gateway, where: str, message_id: str) -> int | None:
    """The ic_id of the last command on `where` if it carries `message_id` (this very request,
    issued before), else None."""
    try:
        last = await gw.js.get_last_msg(gw.names.cmd_stream, where)
    except NotFoundError:
        return None
    return last.seq if (last.headers or {}).get("Nats-Msg-Id") == message_id else None
