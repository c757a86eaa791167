"""Folding the log into a `ReadModel`: `apply_command` for INFERNO_CMD, `apply_event` for EVT.

A reader may tail the two streams independently, in any interleaving: a command and the event
that settles it meet in the operation whichever comes first (the property tests fold every
interleaving to the same model). Each updates the model in place, as `evolve` does.

Logs written before the read models copied the command's issue time (and, on a failure, its
operation and ids) into the outcome event; those values are used when the command is not there
to say them, so old logs read as they always did.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import add
from typing import Any

import msgspec

from inferno.events.codec import UnknownEvent
from inferno.events.commands import AnyCommand
from inferno.events.events import (
    BudgetExhausted,
    BudgetSet,
    Event,
    ExperimentCompleted,
    ExperimentCreated,
    ExperimentExtended,
    OperationCompleted,
    OperationFailed,
    OperationStarted,
    Outcome,
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
    ShardsAssigned,
    ShardsCompleted,
    each_member,
)
from inferno.events.model import PipelineSpec, total_shards
from inferno.events.sequences import Prefix
from inferno.events.state import Assignment, PipelineStatus
from inferno.readmodels.model import Experiment, Operation, Pipeline, ReadModel
from inferno.stats.metrics import merge_buckets


def apply_command(model: ReadModel, seq: int, command: AnyCommand) -> ReadModel:
    """The command at INFERNO_CMD sequence `seq` (its ic_id): its operation, pending until the
    scheduler's outcome arrives (or filled in, if that came first)."""
    op = model.operations.get(seq)
    target = command.target
    if op is None:
        op = model.operations[seq] = Operation(
            ic_id=seq,
            operation=command.operation,
            pipeline_id=target.pipeline_id,
            context_id=target.context_id,
            experiment_id=target.experiment_id,
        )
        model.pending.add(seq)
    else:  # settled before its command folded: the event left the command's part to it
        op.operation = op.operation or command.operation
        op.pipeline_id = op.pipeline_id if op.pipeline_id is not None else target.pipeline_id
        op.context_id = op.context_id or target.context_id
        op.experiment_id = op.experiment_id or target.experiment_id
    op.created_at = command.issued_at or op.created_at
    op.actor, op.reason, op.trace_id = command.actor, command.reason, command.trace_id
    if seq > model.cmd_seq:
        model.cmd_seq = seq
    return model


def apply_event(model: ReadModel, seq: int, event: Event | UnknownEvent) -> ReadModel:
    """The event at INFERNO_EVT sequence `seq`; a type without an entry counts as unknown."""
    apply = _APPLY.get(type(event))
    if apply is None:
        model.unknown_events += 1
    else:
        apply(model, event)
    model.events_applied += 1
    if seq > model.evt_seq:
        model.evt_seq = seq
    return model


def _operation(m: ReadModel, ic_id: int, operation: str) -> Operation:
    """The operation an outcome settles, created here when its command has not folded yet."""
    op = m.operations.get(ic_id)
    if op is None:
        op = m.operations[ic_id] = Operation(ic_id=ic_id, operation=operation)
    m.pending.discard(ic_id)
    return op


def _complete(m: ReadModel, e: Outcome, operation: str, result: dict[str, Any], **ids: Any) -> None:
    if not e.ic_id:
        return  # a schema v1 event: its operation completes with OperationCompleted
    op = _operation(m, e.ic_id, operation)
    for name, value in ids.items():
        setattr(op, name, value)
    op.status = "completed"
    op.result = result
    op.created_at = e.created_at or op.created_at
    op.processed_at = e.at


def _operation_started(m: ReadModel, e: OperationStarted) -> None:
    op = _operation(m, e.ic_id, e.operation)
    op.status = "processing"
    op.pipeline_id = e.pipeline_id
    op.context_id = e.context_id
    op.experiment_id = e.experiment_id
    op.created_at = e.created_at


def _operation_completed(m: ReadModel, e: OperationCompleted) -> None:
    op = m.operations[e.ic_id]
    op.status = "completed"
    op.result = e.result
    op.processed_at = e.at


def _operation_failed(m: ReadModel, e: OperationFailed) -> None:
    op = _operation(m, e.ic_id, e.operation)
    if e.operation:  # written before the read models: a copy of the command's part
        op.pipeline_id = e.pipeline_id
        op.context_id = e.context_id
        op.experiment_id = e.experiment_id
        op.created_at = e.created_at or op.created_at
    op.status = "failed"
    op.error = e.error
    op.processed_at = e.at


def _experiment_created(m: ReadModel, e: ExperimentCreated) -> None:
    m.experiments[e.experiment_id] = Experiment(
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
        row_order=e.row_order,
        policy=e.policy,
        budget=e.budget,
        prompt_tokens=e.prompt_tokens,
    )
    m.contexts[e.context_id] = e.experiment_id
    ids = list(range(e.first_pipeline_id, e.first_pipeline_id + len(e.pipelines)))
    for pipeline_id, spec in zip(ids, e.pipelines, strict=True):
        _add_pipeline(m, pipeline_id, e.experiment_id, e.context_id, spec, None, "user", e.at)
    result = {"experiment_id": e.experiment_id, "context_id": e.context_id, "pipeline_ids": ids}
    ids_of = {"experiment_id": e.experiment_id, "context_id": e.context_id}
    _complete(m, e, "create_experiment", result, **ids_of)


def _experiment_extended(m: ReadModel, e: ExperimentExtended) -> None:
    experiment = m.experiments[e.experiment_id]
    experiment.segments.append(e.rows)
    experiment.status = "running"
    for pid in experiment.pipeline_ids:
        pipeline = m.pipelines[pid]
        pipeline.num_shards += e.rows.num_shards
        if pipeline.status == "completed":
            pipeline.status = "ongoing"
    result = {"first_row": e.rows.first_row, "first_shard": e.rows.first_shard}
    _complete(m, e, "extend", result, experiment_id=e.experiment_id)


def _experiment_completed(m: ReadModel, e: ExperimentCompleted) -> None:
    m.experiments[e.experiment_id].status = "completed"


def _add_pipeline(
    m: ReadModel,
    pipeline_id: int,
    experiment_id: str,
    context_id: str,
    spec: PipelineSpec,
    parent_pipeline_id: int | None,
    source: str,
    at: float,
) -> None:
    experiment = m.experiments[experiment_id]
    m.pipelines[pipeline_id] = Pipeline(
        pipeline_id=pipeline_id,
        experiment_id=experiment_id,
        context_id=context_id,
        spec=spec,
        num_shards=total_shards(experiment),
        parent_pipeline_id=parent_pipeline_id,
        source=source,
        created_at=at,
    )
    experiment.pipeline_ids.append(pipeline_id)
    experiment.status = "running"


def _pipeline_created(m: ReadModel, e: PipelineCreated) -> None:
    parent = e.parent_pipeline_id
    _add_pipeline(m, e.pipeline_id, e.experiment_id, e.context_id, e.spec, parent, e.source, e.at)
    result = {"pipeline_id": e.pipeline_id}
    _complete(m, e, "clone", result, pipeline_id=parent, context_id=e.context_id)


def _set_status(status: PipelineStatus, operation: str = "") -> Callable[[ReadModel, Any], None]:
    def apply(m: ReadModel, e: Any) -> None:
        m.pipelines[e.pipeline_id].status = status
        if operation:
            _complete(m, e, operation, {}, pipeline_id=e.pipeline_id)

    return apply


def _pipeline_pruned(m: ReadModel, e: PipelinePruned) -> None:
    pipeline = m.pipelines[e.pipeline_id]
    pipeline.status, pipeline.pruned = "stopped", e.reason


def _budget_exhausted(m: ReadModel, e: BudgetExhausted) -> None:
    pipeline = m.pipelines[e.pipeline_id]
    pipeline.status, pipeline.over_budget = "stopped", e.reason


def _budget_set(m: ReadModel, e: BudgetSet) -> None:
    experiment = m.experiments[e.experiment_id]
    if e.prompt_tokens is not None:
        experiment.prompt_tokens = e.prompt_tokens
    if e.pipeline_id is None:
        experiment.budget = e.budget
        scope = [m.pipelines[pid] for pid in experiment.pipeline_ids]
    else:
        pipeline = m.pipelines[e.pipeline_id]
        pipeline.spec = msgspec.structs.replace(pipeline.spec, budget=e.budget)
        scope = [pipeline]
    for pipeline in scope:
        if pipeline.over_budget is not None and pipeline.status == "stopped":
            pipeline.status, pipeline.over_budget = "ongoing", None
    ids = {"pipeline_id": e.pipeline_id, "experiment_id": e.experiment_id}
    _complete(m, e, "budget", {"budget": msgspec.to_builtins(e.budget)}, **ids)


def _pipeline_retried(m: ReadModel, e: PipelineRetried) -> None:
    pipeline = m.pipelines[e.pipeline_id]
    pipeline.failure = None
    m.experiments[pipeline.experiment_id].status = "running"
    _set_status("ongoing", "retry")(m, e)


def _pipeline_resumed(m: ReadModel, e: PipelineResumed) -> None:
    pipeline = m.pipelines[e.pipeline_id]
    pipeline.pruned = pipeline.over_budget = None
    _set_status("ongoing", "resume")(m, e)


def _pipeline_ended(status: PipelineStatus) -> Callable[[ReadModel, Any], None]:
    def apply(m: ReadModel, e: Any) -> None:
        pipeline = m.pipelines[e.pipeline_id]
        pipeline.status = status
        pipeline.in_flight.clear()
        if status == "failed":
            pipeline.failure = e.reason
        else:
            result = {"aborted_shards": e.aborted_shards}
            _complete(m, e, "delete", result, pipeline_id=e.pipeline_id)

    return apply


def _shard_assigned(m: ReadModel, e: ShardAssigned) -> None:
    pipeline = m.pipelines[e.pipeline_id]
    pipeline.in_flight[e.shard] = Assignment(e.executor_id, e.attempt, e.at)
    if pipeline.status == "new":
        pipeline.status = "ongoing"


def _shard_completed(m: ReadModel, e: ShardCompleted) -> None:
    pipeline = m.pipelines[e.pipeline_id]
    pipeline.in_flight.pop(e.shard, None)
    stats = e.stats
    if stats.error_rows:
        pipeline.errored.add(e.shard)
    else:
        pipeline.errored.discard(e.shard)
    if e.shard in pipeline.completed:  # a repair: its rows had no answers, now some have
        pipeline.repairs.setdefault(e.shard, []).append(e.report_seq)
        pipeline.row_errors -= stats.rows
    else:
        pipeline.completed[e.shard] = e.report_seq  # where its results are (jetstream.results)
        pipeline.rows_processed += stats.rows
    if (terms := stats.sequence) is not None:
        if terms.segment:
            pipeline.added_sequences.setdefault(terms.segment, Prefix()).absorb(terms)
        else:
            pipeline.sequence = pipeline.sequence or Prefix()
            pipeline.sequence.absorb(terms)
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


def _shard_ended(m: ReadModel, e: ShardReleased | ShardFailed) -> None:
    m.pipelines[e.pipeline_id].in_flight.pop(e.shard, None)


_APPLY: dict[type, Callable[[ReadModel, Any], None]] = {
    OperationStarted: _operation_started,
    OperationCompleted: _operation_completed,
    OperationFailed: _operation_failed,
    ExperimentCreated: _experiment_created,
    ExperimentExtended: _experiment_extended,
    ExperimentCompleted: _experiment_completed,
    PipelineCreated: _pipeline_created,
    PipelineStopped: _set_status("stopped", "stop"),
    PipelinePruned: _pipeline_pruned,
    BudgetExhausted: _budget_exhausted,
    BudgetSet: _budget_set,
    PipelineResumed: _pipeline_resumed,
    PipelineRetried: _pipeline_retried,
    PipelineCompleted: _set_status("completed"),
    PipelineDeleted: _pipeline_ended("deleted"),
    PipelineFailed: _pipeline_ended("failed"),
    ShardAssigned: _shard_assigned,
    ShardCompleted: _shard_completed,
    ShardsAssigned: each_member(_shard_assigned),
    ShardsCompleted: each_member(_shard_completed),
    ShardReleased: _shard_ended,
    ShardFailed: _shard_ended,
}
