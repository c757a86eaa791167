"""`decide`: turn a command, an executor report or a scheduler tick into the events it causes.

Pure: no I/O, no clock (`now` and the input's stream sequence come in as arguments), and it never
changes `state`. A command yields the one event that completes its operation (it carries the
command's `ic_id`), or `OperationFailed` with the reason, which changes nothing else; deleting a
pipeline may also complete its experiment. Reports and ticks that no longer apply (a stale
attempt, a deleted pipeline) yield nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from functools import singledispatch
from typing import Any, NamedTuple

from inferno.events.commands import (
    AnyCommand,
    AnyReport,
    AnyTick,
    AssignWork,
    CloneIntoContext,
    ClonePipeline,
    CreateExperiment,
    DeletePipeline,
    ExpireExecutor,
    Report,
    ResumePipeline,
    ShardAborted,
    ShardErrored,
    ShardFinished,
    StopPipeline,
)
from inferno.events.events import (
    Event,
    ExperimentCompleted,
    ExperimentCreated,
    OperationFailed,
    PipelineCompleted,
    PipelineCreated,
    PipelineDeleted,
    PipelineFailed,
    PipelineResumed,
    PipelineStopped,
    ShardAssigned,
    ShardCompleted,
    ShardFailed,
    ShardReleased,
)
from inferno.events.model import (
    MAX_ATTEMPTS,
    MAX_NAME_LENGTH,
    MAX_RETRY_BACKOFF_S,
    PipelineChanges,
    PipelineSpec,
)
from inferno.events.scheduling import plan_assignments
from inferno.events.state import TERMINAL, Pipeline, State


class Rejected(Exception):
    """A command that is invalid in the current state; its message becomes the operation's error."""


def decide(
    state: State, message: AnyCommand | AnyReport | AnyTick, *, now: float, seq: int = 0
) -> list[Event]:
    """`seq` is the message's stream sequence: a command's ic_id, a report's EXEC sequence."""
    if isinstance(message, AssignWork | ExpireExecutor):
        return _tick(message, state, now)
    if isinstance(message, Report):
        return _report(message, state, now, seq)
    return _command(state, message, now, seq)


# commands


def _command(state: State, cmd: AnyCommand, now: float, ic_id: int) -> list[Event]:
    if ic_id <= state.last_command_seq:
        return []  # already decided: a redelivery after a crash or reconnect
    try:
        return _handle(cmd, state, Stamp(at=now, ic_id=ic_id, created_at=cmd.issued_at))
    except Rejected as rejection:
        return [
            OperationFailed(
                at=now,
                ic_id=ic_id,
                error=str(rejection),
                operation=cmd.operation,
                pipeline_id=getattr(cmd, "pipeline_id", None),
                context_id=getattr(cmd, "context_id", None),
                experiment_id=getattr(cmd, "experiment_id", None),
                created_at=cmd.issued_at,
            )
        ]


class Stamp(NamedTuple):
    """What every event of a command's decision carries: when, which operation, since when."""

    at: float
    ic_id: int
    created_at: float


@singledispatch
def _handle(cmd: Any, state: State, stamp: Stamp) -> list[Event]:
    raise TypeError(f"no decision for {type(cmd).__name__}")


def _pipeline(state: State, pipeline_id: int) -> Pipeline:
    pipeline = state.pipelines.get(pipeline_id)
    if pipeline is None:
        raise Rejected(f"pipeline {pipeline_id} does not exist")
    return pipeline


@_handle.register
def _(cmd: StopPipeline, state: State, stamp: Stamp) -> list[Event]:
    pipeline = _pipeline(state, cmd.pipeline_id)
    if not pipeline.runnable:
        raise Rejected(
            f"cannot stop pipeline {cmd.pipeline_id}: it is {pipeline.status}; "
            "only new or ongoing pipelines can be stopped"
        )
    return [PipelineStopped(**stamp._asdict(), pipeline_id=cmd.pipeline_id)]


@_handle.register
def _(cmd: ResumePipeline, state: State, stamp: Stamp) -> list[Event]:
    pipeline = _pipeline(state, cmd.pipeline_id)
    if pipeline.status != "stopped":
        raise Rejected(
            f"cannot resume pipeline {cmd.pipeline_id}: it is {pipeline.status}; "
            "only stopped pipelines can be resumed"
        )
    return [PipelineResumed(**stamp._asdict(), pipeline_id=cmd.pipeline_id)]


@_handle.register
def _(cmd: DeletePipeline, state: State, stamp: Stamp) -> list[Event]:
    pipeline = _pipeline(state, cmd.pipeline_id)
    if pipeline.status == "deleted":
        raise Rejected(f"pipeline {cmd.pipeline_id} is already deleted")
    deleted = PipelineDeleted(
        **stamp._asdict(), pipeline_id=cmd.pipeline_id, aborted_shards=sorted(pipeline.in_flight)
    )
    return [
        deleted,
        *_experiment_done(state, pipeline.experiment_id, stamp.at, ending={cmd.pipeline_id}),
    ]


@_handle.register
def _(cmd: ClonePipeline, state: State, stamp: Stamp) -> list[Event]:
    parent = _pipeline(state, cmd.pipeline_id)
    taken = live_names(state, parent.experiment_id)
    name = cmd.changes.pipeline_name or clone_name(parent.spec.pipeline_name, taken)
    spec = _apply_changes(parent.spec, cmd.changes, name)
    return [_new_pipeline(state, parent.experiment_id, spec, stamp, parent_id=parent.pipeline_id)]


@_handle.register
def _(cmd: CloneIntoContext, state: State, stamp: Stamp) -> list[Event]:
    experiment_id = state.contexts.get(cmd.context_id)
    if experiment_id is None:
        raise Rejected(f"context {cmd.context_id} does not exist")
    return [_new_pipeline(state, experiment_id, cmd.spec, stamp, parent_id=None)]


def live_names(state: State, experiment_id: str) -> dict[str, int]:
    """The names of the experiment's pipelines that are not deleted, each with its id: the
    CLI resolves names and their prefixes among these, so they must stay unique."""
    return {
        p.spec.pipeline_name: pid
        for pid in state.experiments[experiment_id].pipeline_ids
        if (p := state.pipelines[pid]).status != "deleted"
    }


def clone_name(parent: str, taken: Collection[str]) -> str:
    """A clone's name when none is given: `<parent>-clone`, else the first free of `-clone-2`,
    `-clone-3`, ...; the parent's part is cut so the name stays within MAX_NAME_LENGTH."""
    n = 1
    while True:
        suffix = "-clone" if n == 1 else f"-clone-{n}"
        name = parent[: MAX_NAME_LENGTH - len(suffix)] + suffix
        if name not in taken:
            return name
        n += 1


def check_pipeline_names(names: Iterable[str], taken: Mapping[str, int]) -> None:
    """The precondition of every new pipeline, for `decide` and so for the api's 409: a name
    fits, and is unique among the experiment's live pipelines (`taken`, see `live_names`)."""
    seen: set[str] = set()
    for name in names:
        if len(name) > MAX_NAME_LENGTH:
            raise Rejected(f"pipeline name is {len(name)} characters; at most {MAX_NAME_LENGTH}")
        if name in taken:
            raise Rejected(
                f"pipeline name {name!r} is taken in this experiment by pipeline {taken[name]};"
                " names are unique there, so that a name or its prefix picks one pipeline"
            )
        if name in seen:
            raise Rejected(f"pipeline name {name!r} is given twice; names are unique there")
        seen.add(name)


@_handle.register
def _(cmd: CreateExperiment, state: State, stamp: Stamp) -> list[Event]:
    if cmd.experiment_id in state.experiments:
        raise Rejected(f"experiment {cmd.experiment_id} already exists")
    if cmd.context_id in state.contexts:
        raise Rejected(f"context {cmd.context_id} already exists")
    if cmd.num_shards < 1:
        raise Rejected("num_shards must be at least 1")
    if cmd.row_count < cmd.num_shards:
        raise Rejected(f"num_shards ({cmd.num_shards}) exceeds the dataset's {cmd.row_count} rows")
    if not cmd.pipelines:
        raise Rejected("an experiment needs at least one pipeline")
    if not 1 <= cmd.max_attempts <= MAX_ATTEMPTS:
        raise Rejected(f"max_attempts must be between 1 and {MAX_ATTEMPTS}")
    if not 0 <= cmd.retry_backoff_s <= MAX_RETRY_BACKOFF_S:
        raise Rejected(f"retry_backoff_s must be between 0 and {MAX_RETRY_BACKOFF_S:g} seconds")
    if len(cmd.experiment_name) > MAX_NAME_LENGTH:
        raise Rejected(f"experiment name is longer than {MAX_NAME_LENGTH} characters")
    check_pipeline_names((p.pipeline_name for p in cmd.pipelines), {})
    created = ExperimentCreated(
        **stamp._asdict(),
        experiment_id=cmd.experiment_id,
        context_id=cmd.context_id,
        experiment_name=cmd.experiment_name,
        dataset_ref=cmd.dataset_ref,
        row_count=cmd.row_count,
        num_shards=cmd.num_shards,
        eval=cmd.eval,
        max_attempts=cmd.max_attempts,
        retry_backoff_s=cmd.retry_backoff_s,
        pipelines=cmd.pipelines,
        first_pipeline_id=state.next_pipeline_id,
    )
    return [created]


def _new_pipeline(
    state: State, experiment_id: str, spec: PipelineSpec, stamp: Stamp, *, parent_id: int | None
) -> PipelineCreated:
    check_pipeline_names([spec.pipeline_name], live_names(state, experiment_id))
    return PipelineCreated(
        **stamp._asdict(),
        pipeline_id=state.next_pipeline_id,
        experiment_id=experiment_id,
        context_id=state.experiments[experiment_id].context_id,
        spec=spec,
        parent_pipeline_id=parent_id,
        source="clone",
    )


def _apply_changes(spec: PipelineSpec, changes: PipelineChanges, name: str) -> PipelineSpec:
    return PipelineSpec(
        pipeline_name=name,
        pipeline_type=changes.pipeline_type or spec.pipeline_type,
        model_config={**spec.model_config, **(changes.model_config or {})},
        sampling_params={**spec.sampling_params, **(changes.sampling_params or {})},
        client_config={**spec.client_config, **(changes.client_config or {})},
        rpm_limit=changes.rpm_limit if changes.rpm_limit is not None else spec.rpm_limit,
        tpm_limit=changes.tpm_limit if changes.tpm_limit is not None else spec.tpm_limit,
    )


def _experiment_done(
    state: State, experiment_id: str, now: float, *, ending: set[int]
) -> list[Event]:
    """ExperimentCompleted once every pipeline but those `ending` now is terminal."""
    experiment = state.experiments[experiment_id]
    if experiment.status == "completed":
        return []
    for pid in experiment.pipeline_ids:
        if pid not in ending and state.pipelines[pid].status not in TERMINAL:
            return []
    return [ExperimentCompleted(at=now, experiment_id=experiment_id)]


# executor reports


def _current_attempt(state: State, report: AnyReport) -> Pipeline | None:
    """The pipeline, if this report is about the live attempt of a shard; otherwise None."""
    pipeline = state.pipelines.get(report.pipeline_id)
    if pipeline is None or pipeline.status in ("deleted", "failed"):
        return None
    assignment = pipeline.in_flight.get(report.shard)
    if (
        assignment is None
        or assignment.attempt != report.attempt
        or assignment.executor_id != report.executor_id
    ):
        return None
    return pipeline


def _report(report: AnyReport, state: State, now: float, seq: int) -> list[Event]:
    if seq and seq <= state.last_report_seq:
        return []
    pipeline = _current_attempt(state, report)
    if pipeline is None:
        return []
    if isinstance(report, ShardFinished):
        events: list[Event] = [
            ShardCompleted(
                at=now,
                pipeline_id=report.pipeline_id,
                shard=report.shard,
                attempt=report.attempt,
                executor_id=report.executor_id,
                stats=report.stats,
                report_seq=seq,
            )
        ]
        if len(pipeline.completed) + 1 == pipeline.num_shards:
            events.append(PipelineCompleted(at=now, pipeline_id=pipeline.pipeline_id))
            events += _experiment_done(
                state, pipeline.experiment_id, now, ending={pipeline.pipeline_id}
            )
        return events
    if isinstance(report, ShardErrored):
        return _end_attempt(
            state, pipeline, report.shard, report.error, now, seq, retryable=report.retryable
        )
    if isinstance(report, ShardAborted):
        return _end_attempt(state, pipeline, report.shard, "aborted by executor", now, seq)
    return []  # started / progress: liveness only, nothing to record


def _end_attempt(
    state: State,
    pipeline: Pipeline,
    shard: int,
    reason: str,
    now: float,
    seq: int,
    *,
    retryable: bool = True,
    finish: bool = True,
) -> list[Event]:
    """Back to pending with exponential backoff, or fail shard and pipeline when out of tries.

    `finish=False` leaves the experiment's completion to the caller, which may end several
    pipelines in one decision.
    """
    experiment = state.experiments[pipeline.experiment_id]
    attempt = pipeline.in_flight[shard].attempt
    if retryable and attempt < experiment.max_attempts:
        doubled = experiment.retry_backoff_s * 2.0 ** min(attempt - 1, 32)  # no float overflow
        backoff = min(doubled, MAX_RETRY_BACKOFF_S)
        return [
            ShardReleased(
                at=now,
                pipeline_id=pipeline.pipeline_id,
                shard=shard,
                attempt=attempt,
                reason=reason,
                retry_at=now + backoff,
                report_seq=seq,
            )
        ]
    error = (
        reason if not retryable else f"{reason} (attempt {attempt} of {experiment.max_attempts})"
    )
    events: list[Event] = [
        ShardFailed(
            at=now,
            pipeline_id=pipeline.pipeline_id,
            shard=shard,
            attempt=attempt,
            error=error,
            report_seq=seq,
        ),
        PipelineFailed(
            at=now, pipeline_id=pipeline.pipeline_id, reason=f"shard {shard} failed: {error}"
        ),
    ]
    if finish:
        events += _experiment_done(
            state, pipeline.experiment_id, now, ending={pipeline.pipeline_id}
        )
    return events


# scheduler ticks


def _tick(tick: AnyTick, state: State, now: float) -> list[Event]:
    if isinstance(tick, AssignWork):
        return [
            ShardAssigned(
                at=now,
                pipeline_id=p.pipeline_id,
                shard=p.shard,
                attempt=p.attempt,
                executor_id=p.executor_id,
            )
            for p in plan_assignments(state, tick.executors, now)
        ]
    events: list[Event] = []
    failed: dict[int, str] = {}  # pipeline id -> experiment id
    for pipeline in state.pipelines.values():
        for shard, assignment in sorted(pipeline.in_flight.items()):
            if assignment.executor_id != tick.executor_id or pipeline.pipeline_id in failed:
                continue
            reason = f"executor {tick.executor_id} heartbeat lapsed"
            ended = _end_attempt(state, pipeline, shard, reason, now, 0, finish=False)
            if any(isinstance(e, PipelineFailed) for e in ended):
                failed[pipeline.pipeline_id] = pipeline.experiment_id
            events += ended
    for experiment_id in sorted(set(failed.values())):
        events += _experiment_done(state, experiment_id, now, ending=set(failed))
    return events
