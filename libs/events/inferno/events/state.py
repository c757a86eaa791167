"""The scheduler's decision state, folded from INFERNO_EVT, and `evolve`, its fold.

It holds only what `decide` and the placement read: each pipeline's status, shard bookkeeping
and spec (placement and work orders need the model), what an experiment needs for planning and
retries, the next pipeline id and the last command and report sequences decided. Metrics,
tokens, latency, operations and the other things people read are read models
(`inferno.readmodels`), folded by each reader from the same log.

`evolve` updates the state it is given in place and returns it. A fold owns its state, so this
is unobservable from outside, and it is what lets a replay reach hundreds of thousands of events
per second; `decide` never mutates state, and tests check that folding is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

import msgspec

from inferno.events.codec import UnknownEvent
from inferno.events.events import (
    AnyEvent,
    BudgetExhausted,
    BudgetSet,
    Event,
    ExperimentCompleted,
    ExperimentCreated,
    ExperimentExtended,
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
from inferno.events.model import (
    Budget,
    EvalSpec,
    MetricStats,
    PipelineSpec,
    Policy,
    RowOrder,
    Segment,
    ShardStats,
    total_shards,
)
from inferno.events.sequences import Prefix

PipelineStatus = Literal["new", "ongoing", "stopped", "completed", "failed", "deleted"]
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "deleted"})
STATE_VERSION = 3
"""The shape of `State` as a snapshot stores it; a snapshot of another version is replayed."""


class Assignment(msgspec.Struct, array_like=True, gc=False):
    executor_id: str
    attempt: int
    assigned_at: float


class Pipeline(msgspec.Struct, kw_only=True):
    pipeline_id: int
    experiment_id: str
    spec: PipelineSpec
    num_shards: int
    status: PipelineStatus = "new"
    completed: set[int] = msgspec.field(default_factory=set)
    in_flight: dict[int, Assignment] = msgspec.field(default_factory=dict)
    attempts: dict[int, int] = msgspec.field(default_factory=dict)
    retry_at: dict[int, float] = msgspec.field(default_factory=dict)
    tries_before: dict[int, int] = msgspec.field(default_factory=dict)  # attempts before a retry
    retries: int = 0
    # what a prune policy decides on, kept only when the experiment has one
    policy_metric: MetricStats | None = None
    sequence: Prefix | None = None
    pruned: bool = False
    exempt: bool = False  # resumed after a prune: the policy leaves it alone
    # what its completed shards used (inferno.events.budgets), and whether a budget stopped it
    spent_prompt_tokens: int = 0
    spent_completion_tokens: int = 0
    over_budget: bool = False
    # completed shards with rows the engine failed on (their indices), and those a retry repairs
    errored: dict[int, list[int]] = msgspec.field(default_factory=dict)
    repair: set[int] = msgspec.field(default_factory=set)

    @property
    def runnable(self) -> bool:
        return self.status in ("new", "ongoing")

    @property
    def repairable(self) -> bool:
        """Completed shards have rows without answers that a retry could run again."""
        return bool(self.errored)


class Experiment(msgspec.Struct, kw_only=True):
    experiment_id: str
    context_id: str
    dataset_ref: str
    row_count: int
    num_shards: int
    eval: EvalSpec
    max_attempts: int
    retry_backoff_s: float
    status: Literal["running", "completed"] = "running"
    pipeline_ids: list[int] = msgspec.field(default_factory=list)
    row_order: RowOrder | None = None  # work orders carry it: executors derive their rows
    policy: Policy = msgspec.field(default_factory=Policy)
    budget: Budget | None = None
    prompt_tokens: int | None = None  # estimated, for budgets' reservations
    segments: list[Segment] = msgspec.field(default_factory=list)  # rows extensions added


class State(msgspec.Struct, kw_only=True):
    experiments: dict[str, Experiment] = msgspec.field(default_factory=dict)
    contexts: dict[str, str] = msgspec.field(default_factory=dict)
    pipelines: dict[int, Pipeline] = msgspec.field(default_factory=dict)
    next_pipeline_id: int = 1
    last_command_seq: int = 0
    last_report_seq: int = 0
    events_applied: int = 0
    unknown_events: int = 0


def _decided(s: State, e: Outcome | OperationFailed | OperationStarted) -> None:
    """A command's decision: commands are decided in ic_id order, so this one is the last."""
    if e.ic_id > s.last_command_seq:
        s.last_command_seq = e.ic_id


def _reported(s: State, report_seq: int) -> None:
    if report_seq > s.last_report_seq:
        s.last_report_seq = report_seq


def _experiment_created(s: State, e: ExperimentCreated) -> None:
    s.experiments[e.experiment_id] = Experiment(
        experiment_id=e.experiment_id,
        context_id=e.context_id,
        dataset_ref=e.dataset_ref,
        row_count=e.row_count,
        num_shards=e.num_shards,
        eval=e.eval,
        max_attempts=e.max_attempts,
        retry_backoff_s=e.retry_backoff_s,
        row_order=e.row_order,
        policy=e.policy,
        budget=e.budget,
        prompt_tokens=e.prompt_tokens,
    )
    s.contexts[e.context_id] = e.experiment_id
    for offset, spec in enumerate(e.pipelines):
        _add_pipeline(s, e.first_pipeline_id + offset, e.experiment_id, spec)
    _decided(s, e)


def _experiment_extended(s: State, e: ExperimentExtended) -> None:
    experiment = s.experiments[e.experiment_id]
    experiment.segments.append(e.rows)
    experiment.status = "running"
    for pid in experiment.pipeline_ids:
        pipeline = s.pipelines[pid]
        pipeline.num_shards += e.rows.num_shards
        if pipeline.status == "completed":
            pipeline.status = "ongoing"
    _decided(s, e)


def _experiment_completed(s: State, e: ExperimentCompleted) -> None:
    s.experiments[e.experiment_id].status = "completed"


def _add_pipeline(s: State, pipeline_id: int, experiment_id: str, spec: PipelineSpec) -> None:
    experiment = s.experiments[experiment_id]
    s.pipelines[pipeline_id] = Pipeline(
        pipeline_id=pipeline_id,
        experiment_id=experiment_id,
        spec=spec,
        num_shards=total_shards(experiment),
    )
    experiment.pipeline_ids.append(pipeline_id)
    experiment.status = "running"
    if pipeline_id >= s.next_pipeline_id:
        s.next_pipeline_id = pipeline_id + 1


def _pipeline_created(s: State, e: PipelineCreated) -> None:
    _add_pipeline(s, e.pipeline_id, e.experiment_id, e.spec)
    _decided(s, e)


def _set_status(status: PipelineStatus) -> Callable[[State, Any], None]:
    def apply(s: State, e: Any) -> None:
        s.pipelines[e.pipeline_id].status = status
        if isinstance(e, Outcome):
            _decided(s, e)

    return apply


def _pipeline_ended(status: PipelineStatus) -> Callable[[State, Any], None]:
    """Deleted and failed pipelines drop their in-flight work: no result of it will count."""

    def apply(s: State, e: Any) -> None:
        pipeline = s.pipelines[e.pipeline_id]
        pipeline.status = status
        pipeline.in_flight.clear()
        pipeline.retry_at.clear()
        if isinstance(e, Outcome):
            _decided(s, e)

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
    if pipeline.repair:
        pipeline.repair.discard(e.shard)
    if e.stats.error_rows:  # a repair's are the rows still failing
        pipeline.errored[e.shard] = e.stats.error_rows
    elif pipeline.errored:
        pipeline.errored.pop(e.shard, None)
    pipeline.spent_prompt_tokens += e.stats.prompt_tokens
    pipeline.spent_completion_tokens += e.stats.completion_tokens
    prune = s.experiments[pipeline.experiment_id].policy.prune
    if prune is not None:
        pipeline.policy_metric, pipeline.sequence = policy_standing(pipeline, prune.metric, e.stats)
    _reported(s, e.report_seq)


def policy_standing(
    pipeline: Pipeline, metric: str, stats: ShardStats
) -> tuple[MetricStats | None, Prefix | None]:
    """The pipeline's policy metric and sequence with one more shard (the pipeline unchanged)."""
    more = stats.metrics.get(metric)
    merged = pipeline.policy_metric
    if more is not None:
        merged = more if merged is None else merged.merged(more)
    sequence = pipeline.sequence
    if stats.sequence is not None:
        sequence = (sequence or Prefix()).plus(stats.sequence)
    return merged, sequence


def _pipeline_pruned(s: State, e: PipelinePruned) -> None:
    pipeline = s.pipelines[e.pipeline_id]
    pipeline.status = "stopped"
    pipeline.pruned = True


def _budget_exhausted(s: State, e: BudgetExhausted) -> None:
    pipeline = s.pipelines[e.pipeline_id]
    pipeline.status = "stopped"
    pipeline.over_budget = True


def _budget_set(s: State, e: BudgetSet) -> None:
    experiment = s.experiments[e.experiment_id]
    if e.prompt_tokens is not None and experiment.prompt_tokens is None:
        experiment.prompt_tokens = e.prompt_tokens
    if e.pipeline_id is None:
        experiment.budget = e.budget
        scope = [s.pipelines[pid] for pid in experiment.pipeline_ids]
    else:
        pipeline = s.pipelines[e.pipeline_id]
        pipeline.spec = msgspec.structs.replace(pipeline.spec, budget=e.budget)
        scope = [pipeline]
    for pipeline in scope:
        if pipeline.over_budget and pipeline.status == "stopped":
            pipeline.status = "ongoing"
            pipeline.over_budget = False
    _decided(s, e)


def _pipeline_retried(s: State, e: PipelineRetried) -> None:
    pipeline = s.pipelines[e.pipeline_id]
    pipeline.status = "ongoing"
    pipeline.retry_at.clear()
    pipeline.retries += 1
    pipeline.repair = set(pipeline.errored)
    for shard, attempt in pipeline.attempts.items():
        if shard not in pipeline.completed or shard in pipeline.repair:
            pipeline.tries_before[shard] = attempt
    s.experiments[pipeline.experiment_id].status = "running"
    _decided(s, e)


def _pipeline_resumed(s: State, e: PipelineResumed) -> None:
    pipeline = s.pipelines[e.pipeline_id]
    pipeline.status = "ongoing"
    pipeline.exempt = pipeline.exempt or pipeline.pruned
    pipeline.over_budget = False
    _decided(s, e)


def _shard_released(s: State, e: ShardReleased) -> None:
    pipeline = s.pipelines[e.pipeline_id]
    pipeline.in_flight.pop(e.shard, None)
    pipeline.retry_at[e.shard] = e.retry_at
    _reported(s, e.report_seq)


def _shard_failed(s: State, e: ShardFailed) -> None:
    s.pipelines[e.pipeline_id].in_flight.pop(e.shard, None)
    _reported(s, e.report_seq)


_APPLY: dict[type, Callable[[State, Any], None]] = {
    OperationStarted: _decided,
    OperationFailed: _decided,
    ExperimentCreated: _experiment_created,
    ExperimentExtended: _experiment_extended,
    ExperimentCompleted: _experiment_completed,
    PipelineCreated: _pipeline_created,
    PipelineStopped: _set_status("stopped"),
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
    ShardReleased: _shard_released,
    ShardFailed: _shard_failed,
}
_IGNORED: frozenset[type] = frozenset({t for t in AnyEvent.__args__ if t not in _APPLY})
"""Known events that change nothing `decide` reads (v1's OperationCompleted)."""


_BATCHES = (ShardsAssigned, ShardsCompleted)


def evolve(state: State, event: Event | UnknownEvent) -> State:
    """Apply one event; a type this code does not know counts as unknown."""
    apply = _APPLY.get(type(event))
    if apply is not None:
        apply(state, event)
    elif type(event) not in _IGNORED:
        state.unknown_events += 1
    # a batch event counts as its members: the leader folds a tick's assignments one by one
    state.events_applied += len(event.shards) if isinstance(event, _BATCHES) else 1
    return state


def fold(events: Iterable[AnyEvent | UnknownEvent], state: State | None = None) -> State:
    state = State() if state is None else state
    for event in events:
        evolve(state, event)
    return state


def snapshot(state: State) -> bytes:
    """A canonical encoding: two states are the same exactly when their snapshots are equal."""
    return msgspec.json.encode(msgspec.to_builtins(state, str_keys=True, order="deterministic"))
