"""The dispatcher API, as RapidFire's evals users call it (DESIGN §7): same paths, same bodies,
`{"ic_id", "message"}` answers. Writes also honour `?wait` and `Idempotency-Key`."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from inferno.api import views
from inferno.api.commands import submit
from inferno.api.deps import GatewayDep, IdempotencyKey, Wait
from inferno.api.errors import ApiError
from inferno.api.identity import CallerDep, ReasonQuery
from inferno.api.openapi import errors
from inferno.api.responses import MsgspecJSONResponse, json_response
from inferno.api.schemas import CloneIntoContextBody, PipelineRef
from inferno.events.commands import (
    AnyCommand,
    CloneIntoContext,
    DeletePipeline,
    ResumePipeline,
    StopPipeline,
)

router = APIRouter(
    prefix="/dispatcher", tags=["dispatcher"], default_response_class=MsgspecJSONResponse
)

_WRITE_ERRORS = errors(400, 404, 409, 503)
"""What a command answers besides its acknowledgement (404: the pipeline or context)."""


async def _issue(gw: GatewayDep, command: AnyCommand, key: str | None, wait: float) -> Response:
    op = await submit(gw, command, idempotency_key=key, wait=wait)
    return json_response(views.dispatcher_ack(op))


@router.get("/health-check")
async def health_check() -> Response:
    return json_response({"status": "ok"})


@router.post("/stop-pipeline", responses=_WRITE_ERRORS)
async def stop_pipeline(
    body: PipelineRef,
    gw: GatewayDep,
    caller: CallerDep,
    reason: ReasonQuery = None,
    idempotency_key: IdempotencyKey = None,
    wait: Wait = 0,
) -> Response:
    command = caller.stamp(StopPipeline(pipeline_id=body.pipeline_id), reason)
    return await _issue(gw, command, idempotency_key, wait)


@router.post("/resume-pipeline", responses=_WRITE_ERRORS)
async def resume_pipeline(
    body: PipelineRef,
    gw: GatewayDep,
    caller: CallerDep,
    reason: ReasonQuery = None,
    idempotency_key: IdempotencyKey = None,
    wait: Wait = 0,
) -> Response:
    command = caller.stamp(ResumePipeline(pipeline_id=body.pipeline_id), reason)
    return await _issue(gw, command, idempotency_key, wait)


@router.post("/delete-pipeline", responses=_WRITE_ERRORS)
async def delete_pipeline(
    body: PipelineRef,
    gw: GatewayDep,
    caller: CallerDep,
    reason: ReasonQuery = None,
    idempotency_key: IdempotencyKey = None,
    wait: Wait = 0,
) -> Response:
    command = caller.stamp(DeletePipeline(pipeline_id=body.pipeline_id), reason)
    return await _issue(gw, command, idempotency_key, wait)


@router.post("/clone-pipeline", responses=_WRITE_ERRORS)
async def clone_pipeline(
    body: CloneIntoContextBody,
    gw: GatewayDep,
    caller: CallerDep,
    reason: ReasonQuery = None,
    idempotency_key: IdempotencyKey = None,
    wait: Wait = 0,
) -> Response:
    """A new pipeline in an existing context; the operation's result holds its pipeline_id."""
    command = caller.stamp(CloneIntoContext(context_id=body.context_id, spec=body.spec()), reason)
    return await _issue(gw, command, idempotency_key, wait)


@router.get("/operation-status/{ic_id}", responses=errors(400, 404))
async def operation_status(ic_id: int, gw: GatewayDep) -> Response:
    op = gw.projection.model.operations.get(ic_id)
    if op is None:
        raise ApiError(404, f"operation {ic_id} not found")
    return json_response(views.operation(op))


@router.get("/all-operations")
async def all_operations(gw: GatewayDep) -> Response:
    ops = gw.projection.model.operations
    return json_response([views.operation(ops[i]) for i in sorted(ops)])
