"""`decide`: turn a command, an executor report or a scheduler tick into the events it causes.

Pure: no I/O, no clock (`now` and the input's stream sequence come in as arguments), and it never
changes `state`. A command yields the one event that completes its operation (it carries the
command's `ic_id`), or `OperationFailed` with the reason `inferno.events.preconditions` gives,
which changes nothing else; deleting a pipeline may also complete its experiment. Events record
facts: who asked, when and why stay in the command, and readers join the two on the ic_id.
Reports and ticks that no longer apply (a stale attempt, a deleted pipeline) yield nothing.
"""

from __future__ import annotations

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
    ExtendExperiment,
    Report,
    ResumePipeline,
    RetryPipeline,
    SetBudget,
    ShardAborted,
    ShardErrored,
    ShardFinished,
    ShardsFinished,
    StopPipeline,
)
from inferno.events.events import (
    BudgetExhausted,
    BudgetSet,
    Event,
    ExperimentCompleted,
    ExperimentCreated,
    ExperimentExtended,
    OperationFailed,
    PipelineCompleted,
    PipelineCreated,
    PipelineDeleted,
    PipelineFailed,
    PipelinePruned,
    PipelineResumed,
    PipelineRetried,
    PipelineStopped,
    ShardAssigned,
    ShardCompleted,
    ShardFailed,
    ShardReleased,
)
from inferno.events.ledger import Ledger, budgeted
from inferno.events.model import MAX_RETRY_BACKOFF_S, PipelineChanges, PipelineSpec, extended
from inferno.events.policy import Standing, to_prune
from inferno.events.preconditions import clone_name, live_names, refusal
from inferno.events.scheduling import next_shard, plan_assignments
from inferno.events.state import TERMINAL, Pipeline, State, policy_standing


def decide(
    state: State, message: AnyCommand | AnyReport | AnyTick, *, now: float, seq: int = 0
) -> list[Event]:
    """`seq` is the message's stream sequence: a command's ic_id, a report's EXEC sequence."""
    if isinstance(message, AssignWork | ExpireExecutor):
        return _tick(message, state, now)
    if isinstance(message, Report):
        return _report(message, state, now, seq)
    if isinstance(message, ShardsFinished):
        raise TypeError("a ShardsFinished is decided member by member, evolving between them")
    return _command(state, message, now, seq)


# commands


def _command(state: State, cmd: AnyCommand, now: float, ic_id: int) -> list[Event]:
    if ic_id <= state.last_command_seq:
        return []  # already decided: a redelivery after a crash or reconnect
    refused = refusal(state, cmd)
    if refused is not None:
        return [OperationFailed(at=now, ic_id=ic_id, error=refused.reason)]
    return _handle(cmd, state, Stamp(at=now, ic_id=ic_id))


class Stamp(NamedTuple):
    """What every event of a command's decision carries: when, and which operation it settles."""

    at: float
    ic_id: int


@singledispatch
def _handle(cmd: Any, state: State, stamp: Stamp) -> list[Event]:
    raise TypeError(f"no decision for {type(cmd).__name__}")


@_handle.register
def _(cmd: StopPipeline, state: State, stamp: Stamp) -> list[Event]:
    return [PipelineStopped(**stamp._asdict(), pipeline_id=cmd.pipeline_id)]


@_handle.register
def _(cmd: ResumePipeline, state: State, stamp: Stamp) -> list[Event]:
    return [PipelineResumed(**stamp._asdict(), pipeline_id=cmd.pipeline_id)]


@_handle.register
def _(cmd: RetryPipeline, state: State, stamp: Stamp) -> list[Event]:
    return [PipelineRetried(**stamp._asdict(), pipeline_id=cmd.pipeline_id)]


@_handle.register
def _(cmd: ExtendExperiment, state: State, stamp: Stamp) -> list[Event]:
    experiment = state.experiments[cmd.experiment_id]
    rows = extended(experiment, cmd.rows)
    return [ExperimentExtended(**stamp._asdict(), experiment_id=cmd.experiment_id, rows=rows)]


@_handle.register
def _(cmd: SetBudget, state: State, stamp: Stamp) -> list[Event]:
    experiment = state.experiments[cmd.experiment_id]
    current = (
        experiment.budget
        if cmd.pipeline_id is None
        else state.pipelines[cmd.pipeline_id].spec.budget
    )
    budget = cmd.budget if current is None else current.raised(cmd.budget)
    return [
        BudgetSet(
            **stamp._asdict(),
            experiment_id=cmd.experiment_id,
            pipeline_id=cmd.pipeline_id,
            budget=budget,
            prompt_tokens=cmd.prompt_tokens if experiment.prompt_tokens is None else None,
        )
    ]


@_handle.register
def _(cmd: DeletePipeline, state: State, stamp: Stamp) -> list[Event]:
    pipeline = state.pipelines[cmd.pipeline_id]
    deleted = PipelineDeleted(
        **stamp._asdict(), pipeline_id=cmd.pipeline_id, aborted_shards=sorted(pipeline.in_flight)
    )
    return [
        deleted,
        *_experiment_done(state, pipeline.experiment_id, stamp.at, ending={cmd.pipeline_id}),
    ]


@_handle.register
def _(cmd: ClonePipeline, state: State, stamp: Stamp) -> list[Event]:
    parent = state.pipelines[cmd.pipeline_id]
    taken = live_names(state, parent.experiment_id)
    name = cmd.changes.pipeline_name or clone_name(parent.spec.pipeline_name, taken)
    spec = _apply_changes(parent.spec, cmd.changes, name)
    return [_new_pipeline(state, parent.experiment_id, spec, stamp, parent_id=parent.pipeline_id)]


@_handle.register
def _(cmd: CloneIntoContext, state: State, stamp: Stamp) -> list[Event]:
    experiment_id = state.contexts[cmd.context_id]
    return [_new_pipeline(state, experiment_id, cmd.spec, stamp, parent_id=None)]


@_handle.register
def _(cmd: CreateExperiment, state: State, stamp: Stamp) -> list[Event]:
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
        row_order=cmd.row_order,
        policy=cmd.policy,
        budget=cmd.budget,
        prompt_tokens=cmd.prompt_tokens,
    )
    return [created]


def _new_pipeline(
    state: State, experiment_id: str, spec: PipelineSpec, stamp: Stamp, *, parent_id: int | None
) -> PipelineCreated:
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
        resources={**spec.resources, **(changes.resources or {})},
        endpoint_limit=changes.endpoint_limit or spec.endpoint_limit,
        budget=changes.budget or spec.budget,
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


def _current_attempt(state: State, report: Report) -> Pipeline | None:
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


def _report(report: Report, state: State, now: float, seq: int) -> list[Event]:
    # `<`: the members of one ShardsFinished share its sequence; a report decided already
    # finds its attempt no longer in flight
    if seq and seq < state.last_report_seq:
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
        done = len(pipeline.completed) + (report.shard not in pipeline.completed)
        repairs_left = len(pipeline.repair) - (report.shard in pipeline.repair)
        completes = done == pipeline.num_shards and not repairs_left
        if completes:
            events.append(PipelineCompleted(at=now, pipeline_id=pipeline.pipeline_id))
            events += _experiment_done(
                state, pipeline.experiment_id, now, ending={pipeline.pipeline_id}
            )
        return events + _pruned(state, pipeline, report, completes, now)
    if isinstance(report, ShardErrored):
        return _end_attempt(
            state, pipeline, report.shard, report.error, now, seq, retryable=report.retryable
        )
    if isinstance(report, ShardAborted):
        return _end_attempt(state, pipeline, report.shard, "aborted by executor", now, seq)
    return []  # started / progress: liveness only, nothing to record


def _pruned(
    state: State, pipeline: Pipeline, report: ShardFinished, completes: bool, now: float
) -> list[Event]:
    """The experiment's prune policy after this shard: `PipelinePruned` for whom it stops."""
    experiment = state.experiments[pipeline.experiment_id]
    prune = experiment.policy.prune
    if prune is None:
        return []
    standings = []
    for pid in experiment.pipeline_ids:
        other = state.pipelines[pid]
        if other.status == "deleted":
            continue
        metric, sequence = other.policy_metric, other.sequence
        done = len(other.completed)
        if pid == pipeline.pipeline_id:
            metric, sequence = policy_standing(other, prune.metric, report.stats)
            done += report.shard not in other.completed
        bounds = None
        if sequence is not None:
            confidence = experiment.eval.confidence_level
            bounds = sequence.bounds(prune.metric, confidence, experiment.row_count)
        standings.append(
            Standing(
                pipeline_id=pid,
                running=other.runnable and not (completes and pid == pipeline.pipeline_id),
                exempt=other.exempt,
                rows=sequence.rows if sequence is not None else 0,
                value=metric.total / metric.count if metric is not None and metric.count else None,
                lower=bounds[0] if bounds else None,
                upper=bounds[1] if bounds else None,
                shards=f"{done}/{other.num_shards}",
            )
        )
    return [
        PipelinePruned(at=now, pipeline_id=pid, rule=prune.rule, reason=reason)
        for pid, reason in to_prune(prune, standings)
    ]


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
    tries = attempt - pipeline.tries_before.get(shard, 0)  # this run's, since the last retry
    if retryable and tries < experiment.max_attempts:
        doubled = experiment.retry_backoff_s * 2.0 ** min(tries - 1, 32)  # no float overflow
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
    error = reason if not retryable else f"{reason} (attempt {tries} of {experiment.max_attempts})"
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


def _over_budget(state: State, now: float) -> list[Event]:
    """`BudgetExhausted` for each running pipeline whose next shard would not fit a budget over
    it beside the spend alone: no shard settling can make room for it."""
    if not budgeted(state):
        return []
    ledger = Ledger(state)
    events: list[Event] = []
    for pipeline in state.pipelines.values():
        if not pipeline.runnable or not ledger.covers(pipeline):
            continue
        shard = next_shard(pipeline, now)
        if shard is not None and (why := ledger.blocked(pipeline, shard, held=False)):
            events.append(BudgetExhausted(at=now, pipeline_id=pipeline.pipeline_id, reason=why))
    return events


def _tick(tick: AnyTick, state: State, now: float) -> list[Event]:
    if isinstance(tick, AssignWork):
        assigned: list[Event] = [
            ShardAssigned(
                at=now,
                pipeline_id=p.pipeline_id,
                shard=p.shard,
                attempt=p.attempt,
                executor_id=p.executor_id,
            )
            for p in plan_assignments(state, tick.executors, now)
        ]
        return _over_budget(state, now) + assigned
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
