"""The api's projection as it was before the read models (commit d013663), kept as the oracle
the property and golden tests compare `inferno.readmodels` with: one `State` folded from EVT with
`evolve` and CMD with `note_command`, serving as both decision state and read model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from operator import add
from typing import Any, Literal

import msgspec

from inferno.events.codec import UnknownEvent
from inferno.events.commands import AnyCommand
from inferno.events.events import (
    AnyEvent,
    Event,
    ExperimentCompleted,
    ExperimentCreated,
    OperationCompleted,
    OperationFailed,
    OperationStarted,
    Outcome,
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
from inferno.events.model import EvalSpec, MetricStats, PipelineSpec
from inferno.stats.metrics import merge_buckets

PipelineStatus = Literal["new", "ongoing", "stopped", "completed", "failed", "deleted"]
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "deleted"})
OperationStatus = Literal["pending", "processing", "completed", "failed"]


class Assignment(msgspec.Struct, array_like=True, gc=False):
    executor_id: str
    attempt: int
    assigned_at: float


class Pipeline(msgspec.Struct, kw_only=True):
    pipeline_id: int
    experiment_id: str
    context_id: str
    spec: PipelineSpec
    num_shards: int
    parent_pipeline_id: int | None = None
    source: str = "user"
    status: PipelineStatus = "new"
    created_at: float = 0.0
    completed: set[int] = msgspec.field(default_factory=set)
    in_flight: dict[int, Assignment] = msgspec.field(default_factory=dict)
    attempts: dict[int, int] = msgspec.field(default_factory=dict)
    retry_at: dict[int, float] = msgspec.field(default_factory=dict)
    metrics: dict[str, MetricStats] = msgspec.field(default_factory=dict)
    rows_processed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failure: str | None = None
    # issue 4: what live metrics need beyond `metrics` (merged like them, shard by shard)
    latency_ms_buckets: list[int] = msgspec.field(default_factory=list)
    busy_s: float = 0.0  # the completed shards' durations, summed
    row_errors: int = 0  # rows the engine failed on (they have no scores)

    @property
    def runnable(self) -> bool:
        return self.status in ("new", "ongoing")


class Experiment(msgspec.Struct, kw_only=True):
    experiment_id: str
    experiment_name: str
    context_id: str
    dataset_ref: str
    row_count: int
    num_shards: int
    eval: EvalSpec
    max_attempts: int
    retry_backoff_s: float
    created_at: float = 0.0
    status: Literal["running", "completed"] = "running"
    pipeline_ids: list[int] = msgspec.field(default_factory=list)


class Operation(msgspec.Struct, kw_only=True):
    ic_id: int
    operation: str
    status: OperationStatus = "pending"
    pipeline_id: int | None = None
    context_id: str | None = None
    experiment_id: str | None = None
    error: str | None = None
    result: dict[str, Any] = msgspec.field(default_factory=dict)
    created_at: float = 0.0
    processed_at: float | None = None


class State(msgspec.Struct, kw_only=True):
    experiments: dict[str, Experiment] = msgspec.field(default_factory=dict)
    contexts: dict[str, str] = msgspec.field(default_factory=dict)
    pipelines: dict[int, Pipeline] = msgspec.field(default_factory=dict)
    operations: dict[int, Operation] = msgspec.field(default_factory=dict)
    next_pipeline_id: int = 1
    last_command_seq: int = 0
    last_report_seq: int = 0
    events_applied: int = 0
    unknown_events: int = 0


def _operation(s: State, ic_id: int, operation: str) -> Operation:
    """The operation an outcome settles; a fold of EVT alone (the scheduler's) creates it here."""
    op = s.operations.get(ic_id)
    if op is None:
        op = s.operations[ic_id] = Operation(ic_id=ic_id, operation=operation)
    if ic_id > s.last_command_seq:
        s.last_command_seq = ic_id
    return op


def _complete(s: State, e: Outcome, operation: str, result: dict[str, Any], **ids: Any) -> None:
    if not e.ic_id:
        return  # a schema v1 event: its operation completes with OperationCompleted
    op = _operation(s, e.ic_id, operation)
    for name, value in ids.items():
        setattr(op, name, value)
    op.status = "completed"
    op.result = result
    op.created_at = e.created_at
    op.processed_at = e.at


def _operation_started(s: State, e: OperationStarted) -> None:
    op = _operation(s, e.ic_id, e.operation)
    op.status = "processing"
    op.pipeline_id = e.pipeline_id
    op.context_id = e.context_id
    op.experiment_id = e.experiment_id
    op.created_at = e.created_at


def _operation_completed(s: State, e: OperationCompleted) -> None:
    op = s.operations[e.ic_id]
    op.status = "completed"
    op.result = e.result
    op.processed_at = e.at


def _operation_failed(s: State, e: OperationFailed) -> None:
    op = _operation(s, e.ic_id, e.operation)
    if e.operation:  # v1 events carry only the error; OperationStarted had the rest
        op.pipeline_id = e.pipeline_id
        op.context_id = e.context_id
        op.experiment_id = e.experiment_id
        op.created_at = e.created_at
    op.status = "failed"
    op.error = e.error
    op.processed_at = e.at


def _experiment_created(s: State, e: ExperimentCreated) -> None:
    s.experiments[e.experiment_id] = Experiment(
        experiment_id=e.experiment_id,
        experiment_name=e.experiment_name,
        context_id=e.context_id,
        dataset_ref=e.dataset_ref,
        row_count=e.row_count,
        num_shards=e.num_shards,
        eval=e.eval,
        max_attempts=e.max_attempts,
        retry_backoff_s=e.retry_backoff_s,
        created_at=e.at,
    )
    s.contexts[e.context_id] = e.experiment_id
    ids = list(range(e.first_pipeline_id, e.first_pipeline_id + len(e.pipelines)))
    for pipeline_id, spec in zip(ids, e.pipelines, strict=True):
        _add_pipeline(s, pipeline_id, e.experiment_id, e.context_id, spec, None, "user", e.at)
    result = {"experiment_id": e.experiment_id, "context_id": e.context_id, "pipeline_ids": ids}
    _complete(
        s,
        e,
        "create_experiment",
        result,
        experiment_id=e.experiment_id,
        context_id=e.context_id,
    )


def _experiment_completed(s: State, e: ExperimentCompleted) -> None:
    s.experiments[e.experiment_id].status = "completed"


def _add_pipeline(
    s: State,
    pipeline_id: int,
    experiment_id: str,
    context_id: str,
    spec: PipelineSpec,
    parent_pipeline_id: int | None,
    source: str,
    at: float,
) -> None:
    experiment = s.experiments[experiment_id]
    s.pipelines[pipeline_id] = Pipeline(
        pipeline_id=pipeline_id,
        experiment_id=experiment_id,
        context_id=context_id,
        spec=spec,
        num_shards=experiment.num_shards,
        parent_pipeline_id=parent_pipeline_id,
        source=source,
        created_at=at,
    )
    experiment.pipeline_ids.append(pipeline_id)
    experiment.status = "running"
    if pipeline_id >= s.next_pipeline_id:
        s.next_pipeline_id = pipeline_id + 1


def _pipeline_created(s: State, e: PipelineCreated) -> None:
    _add_pipeline(
        s,
        e.pipeline_id,
        e.experiment_id,
        e.context_id,
        e.spec,
        e.parent_pipeline_id,
        e.source,
        e.at,
    )
    _complete(
        s,
        e,
        "clone",
        {"pipeline_id": e.pipeline_id},
        pipeline_id=e.parent_pipeline_id,
        context_id=e.context_id,
    )


def _set_status(status: PipelineStatus, operation: str = "") -> Callable[[State, Any], None]:
    def apply(s: State, e: Any) -> None:
        s.pipelines[e.pipeline_id].status = status
        if operation:
            _complete(s, e, operation, {}, pipeline_id=e.pipeline_id)

    return apply


def _pipeline_ended(status: PipelineStatus) -> Callable[[State, Any], None]:
    """Deleted and failed pipelines drop their in-flight work: no result of it will count."""

    def apply(s: State, e: Any) -> None:
        pipeline = s.pipelines[e.pipeline_id]
        pipeline.status = status
        pipeline.in_flight.clear()
        pipeline.retry_at.clear()
        if status == "failed":
            pipeline.failure = e.reason
        else:
            result = {"aborted_shards": e.aborted_shards}
            _complete(s, e, "delete", result, pipeline_id=e.pipeline_id)

    return apply


def _shard_assigned(s: State, e: ShardAssigned) -> None:
    pipeline = s.pipelines[e.pipeline_id]
    pipeline.in_flight[e.shard] = Assignment(e.executor_id, e.attempt, e.at)
    pipeline.attempts[e.shard] = e.attempt
    if pipeline.retry_at:
        pipeline.retry_at.pop(e.shard, None)
    if pipeline.status == "new":
        pipeline.status = "ongoing"


def _shard_completed(s: State, e: ShardCompleted) -> None:
    pipeline = s.pipelines[e.pipeline_id]
    pipeline.in_flight.pop(e.shard, None)
    pipeline.completed.add(e.shard)
    stats = e.stats
    pipeline.rows_processed += stats.rows
    pipeline.prompt_tokens += stats.prompt_tokens
    pipeline.completion_tokens += stats.completion_tokens
    pipeline.busy_s += stats.duration_s
    pipeline.row_errors += stats.errors
    buckets = stats.latency_ms_buckets
    if buckets:
        have = pipeline.latency_ms_buckets
        pipeline.latency_ms_buckets = (
            list(map(add, have, buckets))
            if len(have) == len(buckets)
            else merge_buckets(have, buckets)
        )
    metrics = pipeline.metrics
    for name, more in stats.metrics.items():
        current = metrics.get(name)
        metrics[name] = more if current is None else current.merged(more)
    if e.report_seq > s.last_report_seq:
        s.last_report_seq = e.report_seq


def _shard_released(s: State, e: ShardReleased) -> None:
    pipeline = s.pipelines[e.pipeline_id]
    pipeline.in_flight.pop(e.shard, None)
    pipeline.retry_at[e.shard] = e.retry_at
    if e.report_seq > s.last_report_seq:
        s.last_report_seq = e.report_seq


def _shard_failed(s: State, e: ShardFailed) -> None:
    s.pipelines[e.pipeline_id].in_flight.pop(e.shard, None)
    if e.report_seq > s.last_report_seq:
        s.last_report_seq = e.report_seq


_APPLY: dict[type, Callable[[State, Any], None]] = {
    OperationStarted: _operation_started,
    OperationCompleted: _operation_completed,
    OperationFailed: _operation_failed,
    ExperimentCreated: _experiment_created,
    ExperimentCompleted: _experiment_completed,
    PipelineCreated: _pipeline_created,
    PipelineStopped: _set_status("stopped", "stop"),
    PipelineResumed: _set_status("ongoing", "resume"),
    PipelineCompleted: _set_status("completed"),
    PipelineDeleted: _pipeline_ended("deleted"),
    PipelineFailed: _pipeline_ended("failed"),
    ShardAssigned: _shard_assigned,
    ShardCompleted: _shard_completed,
    ShardReleased: _shard_released,
    ShardFailed: _shard_failed,
}


def evolve(state: State, event: Event | UnknownEvent) -> State:
    """Apply one event; a type without an entry in `_APPLY` counts as unknown."""
    apply = _APPLY.get(type(event))
    if apply is None:
        state.unknown_events += 1
    else:
        apply(state, event)
    state.events_applied += 1
    return state


def fold(events: Iterable[AnyEvent | UnknownEvent], state: State | None = None) -> State:
    state = State() if state is None else state
    for event in events:
        evolve(state, event)
    return state


def note_command(state: State, ic_id: int, command: AnyCommand) -> State:
    """Show a command as a pending operation until the scheduler's events about it arrive."""
    if ic_id not in state.operations:
        state.operations[ic_id] = Operation(
            ic_id=ic_id,
            operation=command.operation,
            pipeline_id=getattr(command, "pipeline_id", None),
            context_id=getattr(command, "context_id", None),
            experiment_id=getattr(command, "experiment_id", None),
            created_at=command.issued_at,
        )
    return state


def snapshot(state: State) -> bytes:
    """A canonical encoding: two states are the same exactly when their snapshots are equal."""
    return msgspec.json.encode(msgspec.to_builtins(state, str_keys=True, order="deterministic"))
