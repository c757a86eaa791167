"""RapidFire's fit dashboard and Python controller (its `InteractiveController`), under
/dispatcher as its dispatcher serves them: runs are pipelines, chunks are shards. Writes answer
200 with `{"ic_id", "message"}`, an invalid transition included (its operation fails with the
reason); the controller reads only `error`. Logs are the experiment's history as text lines."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter
from starlette.responses import Response

from inferno.api import rapidfire, views
from inferno.api.commands import submit
from inferno.api.deps import Gateway, GatewayDep, IdempotencyKey, Wait
from inferno.api.errors import ApiError
from inferno.api.history import History
from inferno.api.identity import CallerDep, ReasonQuery
from inferno.api.openapi import errors
from inferno.api.responses import MsgspecJSONResponse, json_response
from inferno.api.routes_dispatcher import PipelineAction, found, issue
from inferno.api.schemas_rapidfire import (
    CloneModifyRunBody,
    ExperimentNameBody,
    LogsBody,
    RunIdBody,
)
from inferno.audit.query import Query
from inferno.events.commands import (
    ClonePipeline,
    DeletePipeline,
    ResumePipeline,
    StopPipeline,
)
from inferno.readmodels import Experiment

router = APIRouter(
    prefix="/dispatcher", tags=["rapidfire"], default_response_class=MsgspecJSONResponse
)

_WRITE_ERRORS = errors(400, 404, 409, 503)
CLONE_WAIT_S = 3.0
"""How long clone-modify-run waits for the decision by default, to answer `new_run_id`
(within the controller's 5 s timeout); `?wait=` overrides it."""
MAX_LOG_LINES = 10_000
"""Lines a log route returns at most, oldest first: a panel shows them, it does not page."""


@router.get("/get-all-runs")
async def get_all_runs(gw: GatewayDep) -> Response:
    """Every pipeline as a run, newest first."""
    return json_response([rapidfire.run(p) for p in rapidfire.newest_first(gw.projection.model)])


@router.post("/get-run", responses=errors(400))
async def get_run(body: RunIdBody, gw: GatewayDep) -> Response:
    """An unknown run is a 400, as RapidFire answers it."""
    p = gw.projection.model.pipelines.get(body.run_id)
    if p is None:
        raise ApiError(400, f"Run {body.run_id} not found")
    return json_response(rapidfire.run(p))


def _run_action(action: PipelineAction) -> Callable[..., Awaitable[Response]]:
    """stop-run, resume-run, delete-run: the pipeline's command; an unknown run is a 404."""

    async def endpoint(
        body: RunIdBody,
        gw: GatewayDep,
        caller: CallerDep,
        reason: ReasonQuery = None,
        idempotency_key: IdempotencyKey = None,
    ) -> Response:
        found(gw.projection.model, body.run_id, "run")
        command = caller.stamp(action(pipeline_id=body.run_id), reason)
        return await issue(gw, command, idempotency_key, 0)

    endpoint.__doc__ = f"The run's pipeline gets a `{action.operation}` command."
    return endpoint


for _path, _action in (
    ("/stop-run", StopPipeline),
    ("/resume-run", ResumePipeline),
    ("/delete-run", DeletePipeline),
):
    router.post(_path, responses=_WRITE_ERRORS, name=_path[1:].replace("-", "_"))(
        _run_action(_action)
    )


@router.post("/clone-modify-run", responses=_WRITE_ERRORS)
async def clone_modify_run(
    body: CloneModifyRunBody,
    gw: GatewayDep,
    caller: CallerDep,
    reason: ReasonQuery = None,
    idempotency_key: IdempotencyKey = None,
    wait: Wait = CLONE_WAIT_S,
) -> Response:
    """A clone of the run with `config`'s knobs (none: the run as it is). `new_run_id` is the
    clone's pipeline_id once decided, else null (see `operation-status`). `warm_start` has no
    meaning for evaluation and is ignored, as RapidFire's evals dispatcher ignores it."""
    found(gw.projection.model, body.run_id, "run")
    command = ClonePipeline(pipeline_id=body.run_id, changes=body.config.changes())
    op = await submit(
        gw,
        caller.stamp(command, reason),
        idempotency_key=idempotency_key,
        wait=wait,
        refuse_invalid=False,
    )
    return json_response({**views.dispatcher_ack(op), "new_run_id": op.result.get("pipeline_id")})


@router.get("/get-all-experiment-names")
async def get_all_experiment_names(gw: GatewayDep) -> Response:
    return json_response(rapidfire.experiment_names(gw.projection.model))


@router.get("/get-running-experiment", responses=errors(404))
async def get_running_experiment(gw: GatewayDep) -> Response:
    e = rapidfire.running(gw.projection.model)
    if e is None:
        raise ApiError(404, "No running experiment found")
    return json_response(rapidfire.experiment(e))


@router.post("/is-experiment-running", responses=errors(400))
async def is_experiment_running(body: ExperimentNameBody, gw: GatewayDep) -> Response:
    experiments = gw.projection.model.experiments.values()
    running = any(
        e.experiment_name == body.experiment_name and e.status == "running" for e in experiments
    )
    return json_response({"is_running": running})


def _experiment(gw: Gateway, body: LogsBody | None) -> Experiment | None:
    """The named experiment, else the running one, as RapidFire picks it; None: no lines."""
    model = gw.projection.model
    if body is not None and body.experiment_name:
        return rapidfire.by_name(model, body.experiment_name)
    return rapidfire.running(model)


async def _logs(gw: Gateway, body: LogsBody | None, *, ic_only: bool) -> Response:
    e = _experiment(gw, body)
    if e is None:
        return json_response([])
    history = History(gw.js, gw.names, gw.projection)
    page = await history.page(Query(experiment_id=e.experiment_id), {}, MAX_LOG_LINES)
    return json_response(rapidfire.log_lines(page.entries, e.experiment_name, ic_only=ic_only))


@router.post("/get-experiment-logs")
async def get_experiment_logs(gw: GatewayDep, body: LogsBody | None = None) -> Response:
    """The experiment's commands and events, oldest first, one text line each."""
    return await _logs(gw, body, ic_only=False)


@router.post("/get-ic-logs")
async def get_ic_logs(gw: GatewayDep, body: LogsBody | None = None) -> Response:
    """The experiment's interactive-control lines: its operations and how each ended."""
    return await _logs(gw, body, ic_only=True)
