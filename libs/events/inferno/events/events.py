"""Domain events: the facts in INFERNO_EVT, written by the scheduler only.

Each event knows its subject kind (the last subject token) and the entity it belongs to; the
subject itself is built by `inferno.events.codec.subject_for`.

A command's whole decision is one event that carries the command's `ic_id` (the event that
completes the operation: `PipelineStopped`, `PipelineCreated`, ... or `OperationFailed`), so an
interactive-control operation costs one plain append. Schema v1 decisions wrote
`OperationStarted` ... `OperationCompleted` around the domain events as an atomic batch; those
logs still fold (tests/golden/events-v1.jsonl), but nothing writes them any more: an R1 atomic
batch costs 8-30 ms on nats-server 2.15 against ~1 ms for one message (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import msgspec

from inferno.events.commands import SCHEMA_VERSION
from inferno.events.model import (
    Budget,
    EvalSpec,
    PipelineSpec,
    Policy,
    RowOrder,
    Segment,
    ShardStats,
)


class Event(msgspec.Struct, tag_field="type", kw_only=True, omit_defaults=True, gc=False):
    kind: ClassVar[str]
    v: int = SCHEMA_VERSION
    at: float = 0.0


class Outcome(Event, kw_only=True):
    """An event that can complete a command's operation: `ic_id` > 0 names it.

    `created_at` (the command's issue time) is only in logs written before the read models: an
    event records the decision, and readers take when, who and why from the command itself.
    """

    ic_id: int = 0
    created_at: float = 0.0


# operations (keyed by ic_id = the command's INFERNO_CMD sequence)


class OperationStarted(Event, tag="operation_started"):
    """Schema v1 only: the start of a decision's atomic batch."""

    kind = "started"
    ic_id: int
    operation: str
    pipeline_id: int | None = None
    context_id: str | None = None
    experiment_id: str | None = None
    created_at: float = 0.0


class OperationCompleted(Event, tag="operation_completed"):
    """Schema v1 only: the end of a decision's atomic batch."""

    kind = "completed"
    ic_id: int
    result: dict[str, Any] = {}


class OperationFailed(Event, tag="operation_failed"):
    """The command was invalid in the state it met; nothing else changed.

    What the command was and targeted is in the command (CMD[ic_id]); the fields after `error`
    are only in logs written before the read models, which copied them here for the fold.
    """

    kind = "failed"
    ic_id: int
    error: str
    operation: str = ""
    pipeline_id: int | None = None
    context_id: str | None = None
    experiment_id: str | None = None
    created_at: float = 0.0


# experiments and pipelines


class ExperimentCreated(Outcome, tag="experiment_created"):
    """Created with its pipelines, numbered from `first_pipeline_id` (v1: separate events)."""

    kind = "created"
    experiment_id: str
    context_id: str
    experiment_name: str
    dataset_ref: str
    row_count: int
    num_shards: int
    eval: EvalSpec = msgspec.field(default_factory=EvalSpec)
    max_attempts: int = 3
    retry_backoff_s: float = 1.0
    pipelines: list[PipelineSpec] = []
    first_pipeline_id: int = 0
    row_order: RowOrder | None = None  # None: rows in file order (and every log before it)
    policy: Policy = msgspec.field(default_factory=Policy)
    budget: Budget | None = None
    prompt_tokens: int | None = None  # estimated over all rows, for budgets' reservations


class ExperimentExtended(Outcome, tag="experiment_extended", kw_only=True):
    """Rows added: `rows` says where they begin (`first_row`, `first_shard`). Every pipeline
    has its shards more; a completed one runs again over them, and so does the experiment."""

    kind = "extended"
    experiment_id: str
    rows: Segment


class ExperimentCompleted(Event, tag="experiment_completed"):
    kind = "completed"
    experiment_id: str


class PipelineCreated(Outcome, tag="pipeline_created"):
    kind = "created"
    pipeline_id: int
    experiment_id: str
    context_id: str
    spec: PipelineSpec
    parent_pipeline_id: int | None = None
    source: str = "user"


class PipelineStopped(Outcome, tag="pipeline_stopped"):
    kind = "stopped"
    pipeline_id: int


class PipelinePruned(Event, tag="pipeline_pruned"):
    """Stopped by the experiment's prune policy, not by a command; `reason` says what the rule
    saw. A resume undoes it, and the policy leaves that pipeline alone from then on."""

    kind = "pruned"
    pipeline_id: int
    rule: str
    reason: str


class BudgetExhausted(Event, tag="budget_exhausted"):
    """Stopped because its next shard would not fit a budget over it even beside what is spent
    alone (`inferno.events.budgets`); `reason` has the numbers. Raising the budget (`BudgetSet`)
    lets it run again."""

    kind = "over_budget"
    pipeline_id: int
    reason: str


class BudgetSet(Outcome, tag="budget_set", kw_only=True):
    """An experiment's budget (`pipeline_id` None) or a pipeline's is now `budget`; what it
    stopped in that scope runs again."""

    kind = "budget_set"
    experiment_id: str
    pipeline_id: int | None = None
    budget: Budget
    prompt_tokens: int | None = None


class PipelineResumed(Outcome, tag="pipeline_resumed"):
    kind = "resumed"
    pipeline_id: int


class PipelineRetried(Outcome, tag="pipeline_retried"):
    """A failed pipeline, or a completed one with row errors, runs again: every shard it has
    not completed is pending, and so is every completed one with rows the engine failed on (for
    just those rows), each with `max_attempts` tries anew."""

    kind = "retried"
    pipeline_id: int


class PipelineDeleted(Outcome, tag="pipeline_deleted"):
    kind = "deleted"
    pipeline_id: int
    aborted_shards: list[int] = []


class PipelineCompleted(Event, tag="pipeline_completed"):
    kind = "completed"
    pipeline_id: int


class PipelineFailed(Event, tag="pipeline_failed"):
    kind = "failed"
    pipeline_id: int
    reason: str


# shards (keyed by pipeline and shard number; `attempt` fences stale executors)


class ShardAssigned(Event, tag="shard_assigned"):
    kind = "assigned"
    pipeline_id: int
    shard: int
    attempt: int
    executor_id: str


class ShardCompleted(Event, tag="shard_completed"):
    """`report_seq` is the INFERNO_EXEC sequence that caused it, so a restart resumes after it."""

    kind = "completed"
    pipeline_id: int
    shard: int
    attempt: int
    executor_id: str
    stats: ShardStats = msgspec.field(default_factory=ShardStats)
    report_seq: int = 0


class AssignedShard(msgspec.Struct, array_like=True, frozen=True, gc=False):
    pipeline_id: int
    shard: int
    attempt: int


class ShardsAssigned(Event, tag="shards_assigned"):
    """Several shards given to one executor by one tick: one message for what would be as
    many `ShardAssigned`, each of which stands alone (`each`); the executor gets them as one
    work message (`inferno.events.work.WorkBatch`)."""

    kind = "assigned"
    executor_id: str
    shards: list[AssignedShard]

    def each(self) -> list[ShardAssigned]:
        return [
            ShardAssigned(
                at=self.at,
                pipeline_id=s.pipeline_id,
                shard=s.shard,
                attempt=s.attempt,
                executor_id=self.executor_id,
            )
            for s in self.shards
        ]


class CompletedShard(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    pipeline_id: int
    shard: int
    attempt: int
    stats: ShardStats = msgspec.field(default_factory=ShardStats)


class ShardsCompleted(Event, tag="shards_completed"):
    """Several shards completed by one report of one executor (`ShardsFinished`, at
    `report_seq`): one message for what would be as many `ShardCompleted` (`each`)."""

    kind = "completed"
    executor_id: str
    shards: list[CompletedShard]
    report_seq: int = 0

    def each(self) -> list[ShardCompleted]:
        return [
            ShardCompleted(
                at=self.at,
                pipeline_id=s.pipeline_id,
                shard=s.shard,
                attempt=s.attempt,
                executor_id=self.executor_id,
                stats=s.stats,
                report_seq=self.report_seq,
            )
            for s in self.shards
        ]


Model = TypeVar("Model")


def each_member(apply: Callable[[Model, Any], None]) -> Callable[[Model, Any], None]:
    """A fold's handler of single shard events, for a batch event: its members in order."""

    def apply_each(model: Model, event: ShardsAssigned | ShardsCompleted) -> None:
        for one in event.each():
            apply(model, one)

    return apply_each


class ShardReleased(Event, tag="shard_released"):
    """The attempt ended without a result; the shard is pending again from `retry_at` on."""

    kind = "released"
    pipeline_id: int
    shard: int
    attempt: int
    reason: str
    retry_at: float = 0.0
    report_seq: int = 0


class ShardFailed(Event, tag="shard_failed"):
    kind = "failed"
    pipeline_id: int
    shard: int
    attempt: int
    error: str
    report_seq: int = 0


AnyEvent = (
    OperationStarted
    | OperationCompleted
    | OperationFailed
    | ExperimentCreated
    | ExperimentExtended
    | ExperimentCompleted
    | PipelineCreated
    | PipelineStopped
    | PipelinePruned
    | BudgetExhausted
    | BudgetSet
    | PipelineResumed
    | PipelineRetried
    | PipelineDeleted
    | PipelineCompleted
    | PipelineFailed
    | ShardAssigned
    | ShardCompleted
    | ShardsAssigned
    | ShardsCompleted
    | ShardReleased
    | ShardFailed
)
