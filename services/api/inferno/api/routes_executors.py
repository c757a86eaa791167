"""The executor registry: list and get executors with their capacity and use, and remove the
lapsed ones (`POST /api/v1/admin/cleanup`).

Reads come from the projection's copy of INFERNO_EXECUTORS and its read model. Cleanup is the
one route that writes to the bucket: it deletes an entry only at the revision it judged lapsed
(compare-and-delete), so an executor that heartbeats meanwhile stays. Entries also lapse on
their own, when the bucket's TTL (INFERNO_HEARTBEAT_TTL_S) expires them; cleanup is for not
waiting that long, e.g. after a host was killed. Like every route it needs the bearer token
when one is configured (docs/security.md).
"""

from __future__ import annotations

import time
from typing import Annotated

import msgspec
import nats.errors
from fastapi import APIRouter, Body
from nats.js.errors import (
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoKeysError,
)
from nats.js.kv import KeyValue
from pydantic import Field
from starlette.responses import Response

from inferno.api import views
from inferno.api.deps import Gateway, GatewayDep
from inferno.api.errors import ApiError, bad_field
from inferno.api.openapi import errors
from inferno.api.projection import stored_at
from inferno.api.responses import MsgspecJSONResponse, json_response
from inferno.api.schemas import _Closed
from inferno.events.resources import in_use
from inferno.events.work import executor_info_decoder

router = APIRouter(tags=["v1"], default_response_class=MsgspecJSONResponse)

HEARTBEATS_MISSED = 2
"""Cleanup's floor: an executor heartbeats every TTL/3, so one silent for two of those is
gone or wedged, never merely between two beats."""


class CleanupBody(_Closed):
    older_than_s: float | None = Field(
        default=None,
        gt=0,
        description="Remove executors whose last heartbeat is older than this; default the"
        " heartbeat TTL (INFERNO_HEARTBEAT_TTL_S), at least two heartbeat intervals (TTL/3 each).",
    )


def _views(gw: Gateway, ids: list[str]) -> list[dict[str, object]]:
    now, ttl = time.time(), gw.settings.heartbeat_ttl_s
    used = in_use(gw.projection.model.pipelines.values())
    executors = gw.projection.executors
    return [views.executor(executors[i], now, used.get(i, {}), ttl) for i in ids]


@router.get("/api/v1/executors")
async def list_executors(gw: GatewayDep) -> Response:
    """Executors registered in INFERNO_EXECUTORS: capacity, use, heartbeat age, `lapsed`."""
    return json_response(_views(gw, sorted(gw.projection.executors)))


@router.get("/api/v1/executors/{executor_id}", responses=errors(404))
async def get_executor(executor_id: str, gw: GatewayDep) -> Response:
    if executor_id not in gw.projection.executors:
        raise ApiError(404, f"executor {executor_id} not found")
    return json_response(_views(gw, [executor_id])[0])


@router.post("/api/v1/admin/cleanup", responses=errors(400, 503))
async def cleanup(gw: GatewayDep, body: Annotated[CleanupBody | None, Body()] = None) -> Response:
    """Remove lapsed executors from the registry: those whose heartbeat is older than
    `older_than_s`. The scheduler sees each go at once and puts its shards back to pending."""
    ttl = gw.settings.heartbeat_ttl_s
    floor = HEARTBEATS_MISSED * ttl / 3
    older_than = ttl if body is None or body.older_than_s is None else body.older_than_s
    if older_than < floor:
        raise bad_field(
            "older_than_s",
            f"at least {floor:g} s (two heartbeats at INFERNO_HEARTBEAT_TTL_S={ttl:g}):"
            " a live executor could be removed",
        )
    try:
        kv = await gw.js.key_value(gw.names.executors_bucket)
        removed, kept = await _remove_lapsed(kv, time.time() - older_than)
    except nats.errors.Error as error:
        raise ApiError(503, f"INFERNO_EXECUTORS unavailable: {error!r}") from None
    return json_response({"removed": removed, "kept": kept, "older_than_s": older_than})


async def _remove_lapsed(kv: KeyValue, before: float) -> tuple[list[str], list[str]]:
    """Delete each entry last heard from before `before` (an unreadable one counts from when
    it was stored), at the revision read; one updated meanwhile is kept."""
    removed, kept = [], []
    try:
        keys = sorted(await kv.keys())
    except NoKeysError:
        return [], []
    for key in keys:
        try:
            entry = await kv.get(key)
        except (KeyNotFoundError, KeyDeletedError):
            continue
        try:
            heard = executor_info_decoder.decode(entry.value or b"").heartbeat_at
        except msgspec.DecodeError:
            heard = stored_at(entry)
        if heard >= before:
            kept.append(key)
            continue
        try:
            await kv.delete(key, last=entry.revision)
        except KeyWrongLastSequenceError:
            kept.append(key)  # it heartbeated between the read and the delete
            continue
        removed.append(key)
    return removed, kept
