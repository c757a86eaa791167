"""The dispatcher API, as RapidFire's evals users and its notebook panel call it (DESIGN §7):
same paths, same bodies, `{"ic_id", "message"}` answers. Writes also honour `?wait` and
`Idempotency-Key`. Ids come as numbers or numeric strings. An invalid transition answers 200
and its operation fails with the reason, as RapidFire's does (its panel takes any non-2xx for a
transport error); /api/v1 answers it with a 409. The fit dashboard's routes are in
`routes_rapidfire_fit`; the shapes in `inferno.api.rapidfire`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from inferno.api import rapidfire, views
from inferno.api.commands import submit
from inferno.api.deps import GatewayDep, IdempotencyKey, Wait
from inferno.api.errors import ApiError, bad_field, validation_message
from inferno.api.identity import CallerDep, ReasonQuery
from inferno.api.openapi import errors, one_of
from inferno.api.responses import MsgspecJSONResponse, json_response
from inferno.api.schemas import CloneIntoContextBody
from inferno.api.schemas_rapidfire import ParentCloneBody, PipelineIdBody
from inferno.events.commands import (
    AnyCommand,
    CloneIntoContext,
    ClonePipeline,
    DeletePipeline,
    ResumePipeline,
    StopPipeline,
)
from inferno.readmodels import Pipeline, ReadModel

Body_T = TypeVar("Body_T", bound=BaseModel)

router = APIRouter(
    prefix="/dispatcher", tags=["dispatcher"], default_response_class=MsgspecJSONResponse
)

_WRITE_ERRORS = errors(400, 404, 409, 503)
"""What a command answers besides its acknowledgement (404: the pipeline or context; 409: an
Idempotency-Key used for another request)."""


async def issue(gw: GatewayDep, command: AnyCommand, key: str | None, wait: float) -> Response:
    op = await submit(gw, command, idempotency_key=key, wait=wait, refuse_invalid=False)
    return json_response(views.dispatcher_ack(op))


def found(model: ReadModel, pipeline_id: int, what: str = "pipeline") -> Pipeline:
    p = model.pipelines.get(pipeline_id)
    if p is None:
        raise ApiError(404, f"{what} {pipeline_id} not found")
    return p


def parsed(schema: type[Body_T], body: dict[str, Any]) -> Body_T:
    """A body validated by hand (when its shape picks the schema), refused as FastAPI would."""
    try:
        return schema.model_validate(body)
    except ValidationError as error:
        first = error.errors()[0]
        raise ApiError(400, validation_message({**first, "loc": ("body", *first["loc"])})) from None


@router.get("/health-check")
async def health_check() -> Response:
    return json_response({"status": "ok"})


PipelineAction = type[StopPipeline] | type[ResumePipeline] | type[DeletePipeline]


def _pipeline_action(action: PipelineAction) -> Callable[..., Awaitable[Response]]:
    """stop-, resume- and delete-pipeline `{pipeline_id}`: the pipeline's command."""

    async def endpoint(
        body: PipelineIdBody,
        gw: GatewayDep,
        caller: CallerDep,
        reason: ReasonQuery = None,
        idempotency_key: IdempotencyKey = None,
        wait: Wait = 0,
    ) -> Response:
        command = caller.stamp(action(pipeline_id=body.pipeline_id), reason)
        return await issue(gw, command, idempotency_key, wait)

    endpoint.__doc__ = f"The pipeline gets a `{action.operation}` command."
    return endpoint


for _path, _action in (
    ("/stop-pipeline", StopPipeline),
    ("/resume-pipeline", ResumePipeline),
    ("/delete-pipeline", DeletePipeline),
):
    router.post(_path, responses=_WRITE_ERRORS, name=_path[1:].replace("-", "_"))(
        _pipeline_action(_action)
    )


@router.post(
    "/clone-pipeline",
    responses=_WRITE_ERRORS,
    openapi_extra=one_of(ParentCloneBody, CloneIntoContextBody),
)
async def clone_pipeline(
    body: Annotated[dict[str, Any], Body(include_in_schema=False)],
    gw: GatewayDep,
    caller: CallerDep,
    reason: ReasonQuery = None,
    idempotency_key: IdempotencyKey = None,
    wait: Wait = 0,
) -> Response:
    """RapidFire's `{"parent_pipeline_id", "config_json"}` (a clone of the parent, in its
    context, with the config's knobs; `pipeline_type: "api"` is `openai`), or a full spec
    `{"context_id", "pipeline_name", "pipeline_type", ...}`. The operation's result holds the
    new pipeline_id."""
    command: AnyCommand
    if "parent_pipeline_id" in body:
        clone = parsed(ParentCloneBody, body)
        if clone.config_json.pipeline_type is None:
            raise bad_field("config_json.pipeline_type", "Field required")
        found(gw.projection.model, clone.parent_pipeline_id, "parent pipeline")
        changes = clone.config_json.changes()
        command = ClonePipeline(pipeline_id=clone.parent_pipeline_id, changes=changes)
    else:
        flat = parsed(CloneIntoContextBody, body)
        command = CloneIntoContext(context_id=flat.context_id, spec=flat.spec())
    return await issue(gw, caller.stamp(command, reason), idempotency_key, wait)


@router.get("/operation-status/{ic_id}", responses=errors(400, 404))
async def operation_status(ic_id: int, gw: GatewayDep) -> Response:
    model = gw.projection.model
    op = model.operations.get(ic_id)
    if op is None:
        raise ApiError(404, f"operation {ic_id} not found")
    return json_response(rapidfire.operation(model, op))


@router.get("/all-operations")
async def all_operations(gw: GatewayDep) -> Response:
    """Interactive-control operations (not experiment creations), newest first."""
    return json_response(rapidfire.ic_operations(gw.projection.model))


@router.get("/list-all-pipeline-ids")
async def list_all_pipeline_ids(gw: GatewayDep) -> Response:
    """The notebook panel's poll: `{pipeline_id, status, ...}` per pipeline, newest first."""
    model = gw.projection.model
    return json_response([rapidfire.pipeline_id_entry(p) for p in rapidfire.newest_first(model)])


@router.get("/get-pipeline-config-json/{pipeline_id}", responses=errors(400, 404))
async def get_pipeline_config_json(pipeline_id: int, gw: GatewayDep) -> Response:
    """`{"pipeline_config_json", "context_id"}`: what the panel's clone form starts from."""
    return json_response(rapidfire.config_entry(found(gw.projection.model, pipeline_id)))


@router.get("/get-all-pipelines")
async def get_all_pipelines(gw: GatewayDep) -> Response:
    model = gw.projection.model
    return json_response([rapidfire.pipeline(model, p) for p in rapidfire.newest_first(model)])


@router.post("/get-pipeline", responses=errors(400, 404))
async def get_pipeline(body: PipelineIdBody, gw: GatewayDep) -> Response:
    model = gw.projection.model
    return json_response(rapidfire.pipeline(model, found(model, body.pipeline_id)))


@router.get("/get-experiment-by-name/{experiment_name:path}", responses=errors(404))
async def get_experiment_by_name(experiment_name: str, gw: GatewayDep) -> Response:
    """The most recent experiment of that name, whatever its status."""
    e = rapidfire.by_name(gw.projection.model, experiment_name)
    if e is None:
        raise ApiError(404, "Experiment not found")
    return json_response(rapidfire.experiment(e))
