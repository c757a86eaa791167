"""Resources under /api/v1: experiments, datasets, pipelines, operations (executors:
`inferno.api.routes_executors`).

Reads come from the projection. Writes issue one command each (`commands.submit`) and answer
with the operation's status object; `?wait=SECONDS` answers once it is final (or with its status
when the time is up), `Idempotency-Key` makes a retry return the original operation.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Request
from starlette.responses import Response, StreamingResponse

from inferno.api import views
from inferno.api.commands import submit
from inferno.api.data import load_manifest, store_rows, store_upload, stored_blocks
from inferno.api.deps import Gateway, GatewayDep, IdempotencyKey, Wait
from inferno.api.errors import ApiError
from inferno.api.fleet import Hosting, live
from inferno.api.identity import Caller, CallerDep
from inferno.api.openapi import errors
from inferno.api.responses import MsgspecJSONResponse, json_response
from inferno.api.schemas import (
    BudgetChangeBody,
    CloneBody,
    ExperimentBody,
    ExtendBody,
    ReasonBody,
    RowsBody,
    check_experiment,
    check_rows,
    check_unique_names,
    check_user_scorers,
    draw_row_order,
)
from inferno.api.timetravel import AT_PARAMETER, model_at
from inferno.datasets.blocks import Manifest
from inferno.datasets.store import Row
from inferno.events.commands import (
    AnyCommand,
    ClonePipeline,
    CreateExperiment,
    DeletePipeline,
    ExtendExperiment,
    ResumePipeline,
    RetryPipeline,
    SetBudget,
    StopPipeline,
)
from inferno.events.model import Prompt, Segment
from inferno.events.state import PipelineStatus
from inferno.jetstream.results import CompletedShard, stream_results
from inferno.readmodels.model import OperationStatus
from inferno.stats.estimates import estimate, prompt_chars, prompt_tokens

router = APIRouter(prefix="/api/v1", tags=["v1"], default_response_class=MsgspecJSONResponse)

_WRITE_ERRORS = errors(400, 404, 409, 503)
"""What a command on a pipeline can answer besides its operation."""


def _hosting(gw: Gateway) -> Hosting:
    """Judges pipelines against the executors live now (`inferno.api.fleet`)."""
    executors = gw.projection.executors
    return Hosting(live(executors, time.time(), gw.settings.heartbeat_ttl_s))


# experiments and datasets


@router.post("/experiments", responses=errors(400, 409, 503))
async def create_experiment(
    body: ExperimentBody,
    gw: GatewayDep,
    caller: CallerDep,
    idempotency_key: IdempotencyKey = None,
    wait: Wait = 0,
    dry_run: Annotated[bool, Query(description="estimate tokens and cost; store nothing")] = False,
) -> Response:
    """Create an experiment with its first pipelines. The dataset is inline (`rows`, stored
    once under its digest) or a stored one (`ref`). `pipelines` in the answer fill in once the
    scheduler has decided (use `?wait`). With `?dry_run=true`: the same checks, then an
    estimate of each pipeline's tokens and worst-case cost (`inferno.stats.estimates`), and
    nothing is stored or appended."""
    check_unique_names(body)
    check_user_scorers(body.eval, gw.settings.scorer_modules)
    if dry_run:
        return json_response(await _estimate(body, gw))
    if body.dataset.rows is not None:
        rows = body.dataset.rows
        check_experiment(body, len(rows), rows[0])
        manifest = await store_rows(gw, rows)
    else:  # the manifest says all that is checked: no row is read
        manifest = await load_manifest(gw, body.dataset.ref, "dataset.ref")
        check_experiment(body, manifest.row_count, manifest.columns)
    prompt = body.eval.spec().prompt
    command = CreateExperiment(
        experiment_id=f"exp-{uuid.uuid4().hex[:12]}",
        context_id=f"ctx-{uuid.uuid4().hex[:12]}",
        experiment_name=body.experiment_name,
        dataset_ref=manifest.dataset_ref,
        row_count=manifest.row_count,
        num_shards=body.num_shards,
        eval=body.eval.spec(),
        pipelines=[p.spec() for p in body.pipelines],
        max_attempts=body.max_attempts,
        retry_backoff_s=body.retry_backoff_s,
        row_order=body.row_order(idempotency_key),
        policy=body.policy.policy(),
        budget=body.budget.budget() if body.budget else None,
        # a budget reserves each shard's prompts: read them once now (a stored dataset's blocks)
        prompt_tokens=await _prompt_tokens(gw, prompt, body.dataset.rows, manifest)
        if body.budgeted
        else None,
    )
    command = caller.stamp(command, body.reason)
    op = await submit(gw, command, idempotency_key=idempotency_key, wait=wait)
    return json_response(views.created_experiment(gw.projection.model, op))


async def _estimate(body: ExperimentBody, gw: Gateway) -> dict[str, Any]:
    pipelines = [p.spec() for p in body.pipelines]
    prompt = body.eval.spec().prompt
    manifest = None
    if body.dataset.rows is not None:
        check_experiment(body, len(body.dataset.rows), body.dataset.rows[0])
    else:
        manifest = await load_manifest(gw, body.dataset.ref, "dataset.ref")
        check_experiment(body, manifest.row_count, manifest.columns)
    rows, chars = await _prompt_chars(gw, prompt, body.dataset.rows, manifest)
    return estimate(pipelines, rows, chars, body.budget.budget() if body.budget else None)


async def _prompt_chars(
    gw: Gateway, prompt: Prompt, rows: list[Row] | None, manifest: Manifest | None
) -> tuple[int, int]:
    """(rows, Σ prompt characters): over inline `rows`, else over the stored dataset's blocks."""
    if rows is not None:
        return prompt_chars(prompt, rows)
    assert manifest is not None
    count = chars = 0
    async for block in stored_blocks(gw, manifest):
        more_rows, more_chars = prompt_chars(prompt, block)
        count, chars = count + more_rows, chars + more_chars
    return count, chars


async def _prompt_tokens(
    gw: Gateway, prompt: Prompt, rows: list[Row] | None, manifest: Manifest | None
) -> int:
    return prompt_tokens((await _prompt_chars(gw, prompt, rows, manifest))[1])


_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": RowsBody.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            **{
                media: {"schema": {"type": "string", "format": "binary"}}
                for media in ("application/x-ndjson", "text/csv", "application/vnd.apache.parquet")
            },
        },
    }
}


@router.post("/datasets", openapi_extra=_UPLOAD_BODY, responses=errors(400, 415, 503))
async def upload_dataset(
    request: Request,
    gw: GatewayDep,
    fmt: Annotated[
        Literal["jsonl", "csv", "parquet"] | None,
        Query(
            alias="format",
            description="the file's format, when its name or Content-Type does not say",
        ),
    ] = None,
) -> Response:
    """Store rows once (content-addressed); experiments then name them by `dataset_ref`.
    The rows come as JSON `{"rows": [...]}`, as a multipart form's `file` (.jsonl, .csv,
    .parquet), or as the raw body with a Content-Type of application/x-ndjson, text/csv or
    application/vnd.apache.parquet, which is read as a stream (memory bounded, docs/api.md).
    CSV values stay strings."""
    manifest = await store_upload(request, gw, fmt)
    return json_response({"dataset_ref": manifest.dataset_ref, "row_count": manifest.row_count})


@router.get("/experiments")
async def list_experiments(gw: GatewayDep) -> Response:
    experiments = gw.projection.model.experiments.values()
    return json_response([views.experiment(e) for e in experiments])


@router.get("/experiments/{experiment_id}", responses=errors(404))
async def get_experiment(experiment_id: str, gw: GatewayDep) -> Response:
    model = gw.projection.model
    experiment = model.experiments.get(experiment_id)
    if experiment is None:
        raise ApiError(404, f"experiment {experiment_id} not found")
    return json_response(views.experiment_detail(model, experiment, _hosting(gw)))


@router.get("/experiments/{experiment_id}/leaderboard", responses=errors(400, 404))
async def experiment_leaderboard(
    experiment_id: str,
    gw: GatewayDep,
    metric: Annotated[
        str | None, Query(description="the metric to rank by (default: the first scorer's)")
    ] = None,
) -> Response:
    """The experiment's pipelines (deleted ones left out), best first by `metric`, each with
    its value, confidence interval, shards done and status."""
    model = gw.projection.model
    experiment = model.experiments.get(experiment_id)
    if experiment is None:
        raise ApiError(404, f"experiment {experiment_id} not found")
    known = views.metric_names(model, experiment)
    if metric is not None and metric not in known:
        raise ApiError(
            400,
            f"query parameter 'metric': {metric!r} is not a metric of experiment"
            f" {experiment_id} (it has: {', '.join(known) or 'none'})",
        )
    chosen = metric or (known[0] if known else None)
    return json_response(views.leaderboard(model, experiment, chosen))


# pipelines


@router.get("/pipelines", responses=errors(400, 503), openapi_extra=AT_PARAMETER)
async def list_pipelines(
    request: Request,
    gw: GatewayDep,
    experiment_id: str | None = None,
    status: Annotated[PipelineStatus | None, Query()] = None,
) -> Response:
    """The pipelines now, or with `at` as they were then (docs/audit.md)."""
    at = request.query_params.get("at")
    model = await model_at(gw, at)
    why = _hosting(gw).why if at is None else lambda _: None  # the fleet then is not known
    return json_response(
        [
            views.pipeline(p, model.experiments[p.experiment_id], why(p))
            for _, p in sorted(model.pipelines.items())
            if (experiment_id is None or p.experiment_id == experiment_id)
            and (status is None or p.status == status)
        ]
    )


@router.get("/pipelines/{pipeline_id}", responses=errors(400, 404))
async def get_pipeline(pipeline_id: int, gw: GatewayDep) -> Response:
    model = gw.projection.model
    pipeline = model.pipelines.get(pipeline_id)
    if pipeline is None:
        raise ApiError(404, f"pipeline {pipeline_id} not found")
    experiment = model.experiments[pipeline.experiment_id]
    return json_response(views.pipeline(pipeline, experiment, _hosting(gw).why(pipeline)))


@router.get(
    "/pipelines/{pipeline_id}/results",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}}, **errors(400, 404, 503)},
)
async def pipeline_results(pipeline_id: int, gw: GatewayDep) -> StreamingResponse:
    """Per-row outputs and scores as JSONL: the completed shards' results, in shard order
    (shards still running or pending are not included yet)."""
    pipeline = gw.projection.model.pipelines.get(pipeline_id)
    if pipeline is None:
        raise ApiError(404, f"pipeline {pipeline_id} not found")
    shards = [
        CompletedShard(
            pipeline.experiment_id,
            pipeline_id,
            shard,
            report_seq,
            tuple(pipeline.repairs.get(shard, ())),
        )
        for shard, report_seq in sorted(pipeline.completed.items())
    ]
    return StreamingResponse(
        stream_results(gw.js, gw.names, shards), media_type="application/x-ndjson"
    )


async def _issue(gw: GatewayDep, command: AnyCommand, key: str | None, wait: float) -> Response:
    op = await submit(gw, command, idempotency_key=key, wait=wait)
    return json_response(views.operation(op))


@router.post("/experiments/{experiment_id}/extend", responses=_WRITE_ERRORS)
async def extend_experiment(
    experiment_id: str,
    body: ExtendBody,
    gw: GatewayDep,
    caller: CallerDep,
    idempotency_key: IdempotencyKey = None,
    wait: Wait = 0,
) -> Response:
    """Add rows: inline (`dataset.rows`, stored once under their digest) or a stored dataset
    (`dataset.ref`), as `num_shards` new shards of every pipeline after the ones it has.
    Completed work stands; completed pipelines run again over the new rows; metrics cover
    every row. The operation's result says where the rows begin (`first_row`, `first_shard`)."""
    experiment = gw.projection.model.experiments.get(experiment_id)
    if experiment is None:
        raise ApiError(404, f"experiment {experiment_id} not found")
    if body.dataset.rows is not None:
        rows_given = body.dataset.rows
        check_rows(experiment.eval, body.num_shards, len(rows_given), rows_given[0], "dataset")
        manifest = await store_rows(gw, body.dataset.rows)
    else:
        manifest = await load_manifest(gw, body.dataset.ref, "dataset.ref")
        check_rows(
            experiment.eval, body.num_shards, manifest.row_count, manifest.columns, "dataset"
        )
    model = gw.projection.model
    budgeted = experiment.budget is not None or any(
        model.pipelines[pid].spec.budget is not None for pid in experiment.pipeline_ids
    )
    prompt = experiment.eval.prompt
    rows = Segment(
        dataset_ref=manifest.dataset_ref,
        row_count=manifest.row_count,
        num_shards=body.num_shards,
        row_order=None
        if experiment.row_order is None
        else draw_row_order(body.shuffle_seed, idempotency_key),
        # for budgets' reservations: inline rows are at hand; a stored dataset is read for it
        # only when a budget (or a budget's estimate) is there already
        prompt_tokens=await _prompt_tokens(gw, prompt, body.dataset.rows, manifest)
        if budgeted or experiment.prompt_tokens is not None or body.dataset.rows is not None
        else None,
    )
    command = ExtendExperiment(experiment_id=experiment_id, rows=rows)
    return await _issue(gw, caller.stamp(command, body.reason), idempotency_key, wait)


@router.post("/experiments/{experiment_id}/budget", responses=_WRITE_ERRORS)
async def set_experiment_budget(
    experiment_id: str,
    body: BudgetChangeBody,
    gw: GatewayDep,
    caller: CallerDep,
    idempotency_key: IdempotencyKey = None,
    wait: Wait = 0,
) -> Response:
    """Set the budget all the experiment's pipelines share: the fields given replace the
    current ones. Pipelines the budget stopped run again (docs/evaluation.md, "Budgets")."""
    return await _set_budget(gw, caller, body, experiment_id, None, idempotency_key, wait)


@router.post("/pipelines/{pipeline_id}/budget", responses=_WRITE_ERRORS)
async def set_pipeline_budget(
    pipeline_id: int,
    body: BudgetChangeBody,
    gw: GatewayDep,
    caller: CallerDep,
    idempotency_key: IdempotencyKey = None,
    wait: Wait = 0,
) -> Response:
    """Set this pipeline's own budget; if it stopped the pipeline, the pipeline runs again."""
    pipeline = gw.projection.model.pipelines.get(pipeline_id)
    if pipeline is None:
        raise ApiError(404, f"pipeline {pipeline_id} not found")
    experiment_id = pipeline.experiment_id
    return await _set_budget(gw, caller, body, experiment_id, pipeline_id, idempotency_key, wait)


async def _set_budget(
    gw: Gateway,
    caller: Caller,
    body: BudgetChangeBody,
    experiment_id: str,
    pipeline_id: int | None,
    key: str | None,
    wait: float,
) -> Response:
    experiment = gw.projection.model.experiments.get(experiment_id)
    if experiment is None:
        raise ApiError(404, f"experiment {experiment_id} not found")
    tokens = None
    if experiment.prompt_tokens is None:  # its first budget: estimate the prompts once
        manifest = await load_manifest(gw, experiment.dataset_ref, "experiment_id")
        tokens = await _prompt_tokens(gw, experiment.eval.prompt, None, manifest)
    command = SetBudget(
        experiment_id=experiment_id,
        pipeline_id=pipeline_id,
        budget=body.budget(),
        prompt_tokens=tokens,
    )
    return await _issue(gw, caller.stamp(command, body.reason), key, wait)


@router.post("/pipelines/{pipeline_id}/stop", responses=_WRITE_ERRORS)
async def stop_pipeline(
    pipeline_id: int,
    gw: GatewayDep,
    caller: CallerDep,
    body: Annotated[ReasonBody | None, Body()] = None,
    idempotency_key: IdempotencyKey = None,
    wait: Wait = 0,
) -> Response:
    """No new shard starts; an in-flight one finishes and counts."""
    command = caller.stamp(StopPipeline(pipeline_id=pipeline_id), (body or ReasonBody()).reason)
    return await _issue(gw, command, idempotency_key, wait)


@router.post("/pipelines/{pipeline_id}/resume", responses=_WRITE_ERRORS)
async def resume_pipeline(
    pipeline_id: int,
    gw: GatewayDep,
    caller: CallerDep,
    body: Annotated[ReasonBody | None, Body()] = None,
    idempotency_key: IdempotencyKey = None,
    wait: Wait = 0,
) -> Response:
    """Continue a stopped pipeline from its first incomplete shard."""
    command = caller.stamp(ResumePipeline(pipeline_id=pipeline_id), (body or ReasonBody()).reason)
    return await _issue(gw, command, idempotency_key, wait)


@router.post("/pipelines/{pipeline_id}/retry", responses=_WRITE_ERRORS)
async def retry_pipeline(
    pipeline_id: int,
    gw: GatewayDep,
    caller: CallerDep,
    body: Annotated[ReasonBody | None, Body()] = None,
    idempotency_key: IdempotencyKey = None,
    wait: Wait = 0,
) -> Response:
    """Run a failed pipeline's failed and never-run shards again, and the rows its completed
    shards have no answer for (a completed pipeline with row errors too); the rest stands."""
    command = caller.stamp(RetryPipeline(pipeline_id=pipeline_id), (body or ReasonBody()).reason)
    return await _issue(gw, command, idempotency_key, wait)


@router.post("/pipelines/{pipeline_id}/delete", responses=_WRITE_ERRORS)
async def delete_pipeline(
    pipeline_id: int,
    gw: GatewayDep,
    caller: CallerDep,
    body: Annotated[ReasonBody | None, Body()] = None,
    idempotency_key: IdempotencyKey = None,
    wait: Wait = 0,
) -> Response:
    """Abort in-flight work; nothing more of this pipeline runs or counts."""
    command = caller.stamp(DeletePipeline(pipeline_id=pipeline_id), (body or ReasonBody()).reason)
    return await _issue(gw, command, idempotency_key, wait)


@router.post("/pipelines/{pipeline_id}/clone", responses=_WRITE_ERRORS)
async def clone_pipeline(
    pipeline_id: int,
    gw: GatewayDep,
    caller: CallerDep,
    body: Annotated[CloneBody | None, Body()] = None,
    idempotency_key: IdempotencyKey = None,
    wait: Wait = 0,
) -> Response:
    """A new pipeline in the same context with some knobs changed (dicts merge key by key);
    the operation's result holds its pipeline_id."""
    body = body or CloneBody()
    command = caller.stamp(
        ClonePipeline(pipeline_id=pipeline_id, changes=body.changes()), body.reason
    )
    return await _issue(gw, command, idempotency_key, wait)


# operations


@router.get("/operations", responses=errors(400))
async def list_operations(
    gw: GatewayDep,
    pipeline_id: int | None = None,
    status: Annotated[OperationStatus | None, Query()] = None,
) -> Response:
    ops = gw.projection.model.operations
    return json_response(
        [
            views.operation(ops[i])
            for i in sorted(ops)
            if (pipeline_id is None or ops[i].pipeline_id == pipeline_id)
            and (status is None or ops[i].status == status)
        ]
    )


@router.get("/operations/{ic_id}", responses=errors(400, 404))
async def get_operation(ic_id: int, gw: GatewayDep) -> Response:
    op = gw.projection.model.operations.get(ic_id)
    if op is None:
        raise ApiError(404, f"operation {ic_id} not found")
    return json_response(views.operation(op))
