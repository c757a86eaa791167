"""Issuing a command: the one write path of both the dispatcher and the /api/v1 routes.

A command is appended to INFERNO_CMD as a single message; its stream sequence is its ic_id.
The answer is read back from the projection (once the CMD tail has folded it), so a client sees
exactly what a later read shows, and a retried Idempotency-Key gets the original operation.
Secrets a request carries are stored in INFERNO_SECRETS and replaced by refs first
(`inferno.api.secrets`), so no command in the log holds one.

A command larger than the NATS server's max_payload is a 413, found before anything is stored
(the secrets of a command that large would not fit in INFERNO_SECRETS either).

Before appending, the read model is asked whether the command can work, by the decider's own
precondition (`inferno.events.preconditions.refusal`, which `decide` runs too): an unknown
pipeline or context is a 404, a transition already shown to be invalid a 409, in the decider's
words. While an earlier command on the same pipeline is still undecided the read model cannot
tell (stop, then resume at once, is valid), so nothing on that pipeline is refused then. The
decider stays the judge: a command that races another still fails its operation with the reason.
"""

from __future__ import annotations

import hashlib
import itertools
import time
import uuid

import msgspec
from nats.js.errors import NotFoundError

from inferno.api import secrets, views
from inferno.api.deps import Gateway
from inferno.api.errors import ApiError
from inferno.api.options import check_backend_options
from inferno.events import encode
from inferno.events.commands import AnyCommand, CreateExperiment
from inferno.events.preconditions import refusal
from inferno.jetstream import Outgoing
from inferno.jetstream.layout import DUPLICATE_WINDOW_S
from inferno.readmodels import Operation, ReadModel

DIGEST_HEADER = "Inferno-Request-Digest"
_HEADER_ROOM = 512
"""Bytes kept for a command's headers (Nats-Msg-Id, the digest) within max_payload."""


def msg_id(idempotency_key: str | None) -> str:
    """`Nats-Msg-Id`: derived from the client's key, so a retry is a duplicate the server drops."""
    if idempotency_key is None:
        return uuid.uuid4().hex
    return "idem-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]


def request_digest(command: AnyCommand) -> str:
    """What an Idempotency-Key is bound to: a digest of the canonical request, the command as
    the client asked for it, carried in a header of the stored CMD message (`DIGEST_HEADER`).

    The Nats-Msg-Id stays derived from the key alone, so the server itself drops a retry and
    answers with the original's sequence, whatever the retry carries; the api then compares the
    two digests, and a different request is a 409. Left out: what the api adds, not the client
    (`issued_at`, a new experiment's ids), and secret values, replaced by refs numbered in
    order, since a digest of a short password in the log could be brute-forced. So a retry
    that changes only a secret's value gets the original operation. The trace id is left out
    too: each attempt is a request of its own.
    """
    canonical = msgspec.structs.replace(command, issued_at=0.0, trace_id=None)
    if isinstance(canonical, CreateExperiment):
        canonical = msgspec.structs.replace(canonical, experiment_id="", context_id="")
    numbers = itertools.count()
    found = secrets.Found(make_ref=lambda: f"sec-{next(numbers):032x}")
    body = msgspec.json.encode(secrets.without_secrets(canonical, found), order="sorted")
    return "sha256-" + hashlib.sha256(body).hexdigest()


def check_size(payload: bytes, max_payload: int) -> None:
    """413 for a command the NATS server would refuse (it counts headers too)."""
    if len(payload) + _HEADER_ROOM > max_payload:
        raise ApiError(
            413,
            f"the command is {len(payload)} bytes encoded, over what the NATS server takes in"
            f" one message (max_payload {max_payload} bytes, {_HEADER_ROOM} of them kept for"
            " headers); put large data in a dataset (POST /api/v1/datasets)",
        )


def refused(model: ReadModel, command: AnyCommand, *, invalid: bool = True) -> ApiError | None:
    """404 for what the command targets but the read model lacks; 409 for what `decide` would
    refuse in the read model's state, unless a command on the same pipeline is undecided or
    `invalid` is False (RapidFire's routes: the command goes in, its operation fails)."""
    found = refusal(model, command)
    if found is None:
        return None
    if found.missing is not None:
        return ApiError(404, f"{found.missing} not found")
    if not invalid:
        return None
    pipeline_id = command.target.pipeline_id
    if pipeline_id is not None and model.undecided(pipeline_id):
        return None  # the pipeline is about to change: only the decider can judge now
    return ApiError(409, found.reason)


async def submit(
    gw: Gateway,
    command: AnyCommand,
    *,
    idempotency_key: str | None,
    wait: float,
    refuse_invalid: bool = True,
) -> Operation:
    """Append `command` (unless it is refused or a retry), and return its operation as the
    projection shows it: once final if `wait` > 0 and it gets there in time. Without
    `refuse_invalid` an invalid transition is appended too, and the decider fails it with the
    reason (RapidFire's clients take any non-2xx for a transport error)."""
    projection = gw.projection
    message_id = msg_id(idempotency_key)
    digest = request_digest(command) if idempotency_key is not None else None
    where = command.subject(gw.names)
    refused_now = refused(projection.model, command, invalid=refuse_invalid)
    if refused_now is not None:
        # a retry of a command that has taken effect since is refused now: answer the original
        earlier = await _earlier(gw, command, message_id) if idempotency_key else None
        if earlier is None:
            raise refused_now
        ic_id, stored_digest = earlier
    else:
        check_backend_options(projection.model, command)
        check_size(encode(command), gw.nc.max_payload)  # before its secrets are stored
        command = await secrets.protect(gw, command)  # before anything is appended
        payload = encode(command)
        check_size(payload, gw.nc.max_payload)  # refs may be longer than what they replace
        headers = {DIGEST_HEADER: digest} if digest is not None else None
        outgoing = Outgoing(where, payload, message_id, headers)
        appended = await gw.appender.append(gw.names.cmd_stream, [outgoing])
        ic_id, stored_digest = appended.first_seq, digest
        if appended.duplicate:
            stored_digest = await _digest_of(gw, ic_id)
    if stored_digest != digest:
        raise await _key_reused(gw, ic_id)
    # with ?wait, the scheduler's outcome usually folds before the command's own echo does
    op = await projection.wait_for_operation(ic_id, wait) if wait > 0 else None
    if op is None and not await projection.wait_for_command(ic_id):
        raise ApiError(
            503, f"command stored as ic_id {ic_id}, but the projection is behind; retry the read"
        )
    return projection.model.operations[ic_id]


async def _key_reused(gw: Gateway, ic_id: int) -> ApiError:
    """The 409 for an Idempotency-Key that came with another request, naming that one."""
    await gw.projection.wait_for_command(ic_id)
    op = gw.projection.model.operations.get(ic_id)
    what = f", {views.describe(op)}" if op is not None else ""
    return ApiError(
        409, f"Idempotency-Key was already used for another request: ic_id {ic_id}{what}"
    )


async def _digest_of(gw: Gateway, ic_id: int) -> str | None:
    """The request digest stored with command `ic_id` (None: it carries none)."""
    try:
        stored = await gw.js.get_msg(gw.names.cmd_stream, seq=ic_id)
    except NotFoundError:
        return None
    return (stored.headers or {}).get(DIGEST_HEADER)


async def _earlier(
    gw: Gateway, command: AnyCommand, message_id: str
) -> tuple[int, str | None] | None:
    """The ic_id and request digest of the command an Idempotency-Key issued before (stored with
    `message_id`), if the server would still drop a retry of it as a duplicate; else None.

    A refused request never reaches the server's own duplicate check, so the api looks: among
    the read model's operations of the same kind on the same pipeline issued within the
    duplicate window, newest first, the one whose stored command carries the id. Not just the
    last command on the subject: under concurrent control another client's command on the same
    pipeline often came after the original."""
    since = time.time() - DUPLICATE_WINDOW_S
    operations = gw.projection.model.operations
    target = command.target.pipeline_id
    candidates = []  # taken before any await: the projection folds on meanwhile
    for ic_id in reversed(operations):
        op = operations[ic_id]
        if op.created_at and op.created_at < since:
            break  # folded in about the order they were issued: older ones are out too
        if op.operation == command.operation and op.pipeline_id == target:
            candidates.append(ic_id)
    for ic_id in candidates:
        try:
            stored = await gw.js.get_msg(gw.names.cmd_stream, seq=ic_id)
        except NotFoundError:
            continue
        headers = stored.headers or {}
        if headers.get("Nats-Msg-Id") == message_id:
            return ic_id, headers.get(DIGEST_HEADER)
    return None
