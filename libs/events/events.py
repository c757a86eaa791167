"""Domain events: the facts in INFERNO_EVT, written by the scheduler only.

Each event knows its subject kind (the last subject token) and the entity it belongs to; the
subject itself is built by `inferno.events.codec.subject_for`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from inferno.events.commands import SCHEMA_VERSION
from inferno.events.model import EvalSpec, PipelineSpec, ShardStats


class Event(msgspec.Struct, tag_field="type", kw_only=True, omit_defaults=True, gc=False):
    kind: ClassVar[str]
    v: int = SCHEMA_VERSION
    at: float = 0.0


# operations (keyed by ic_id = the command's INFERNO_CMD sequence)


class OperationStarted(Event, tag="operation_started"):
    kind = "started"
    ic_id: int
    operation: str
    pipeline_id: int | None = None
    context_id: str | None = None
    experiment_id: str | None = None
    created_at: float = 0.0


class OperationCompleted(Event, tag="operation_completed"):
    kind = "completed"
    ic_id: int
    result: dict[str, Any] = {}


class OperationFailed(Event, tag="operation_failed"):
    kind = "failed"
    ic_id: int
    error: str


# experiments and pipelines


class ExperimentCreated(Event, tag="experiment_created"):
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


class ExperimentCompleted(Event, tag="experiment_completed"):
    kind = "completed"
    experiment_id: str


class PipelineCreated(Event, tag="pipeline_created"):
    kind = "created"
    pipeline_id: int
    experiment_id: str
    context_id: str
    spec: PipelineSpec
    parent_pipeline_id: int | None = None
    source: str = "user"


class PipelineStopped(Event, tag="pipeline_stopped"):
    kind = "stopped"
    pipeline_id: int


class PipelineResumed(Event, tag="pipeline_resumed"):
    kind = "resumed"
    pipeline_id: int


class PipelineDeleted(Event, tag="pipeline_deleted"):
    kind = "deleted"
    pipeline_id: int


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
    | ExperimentCompleted
    | PipelineCreated
    | PipelineStopped
    | PipelineResumed
    | PipelineDeleted
    | PipelineCompleted
    | PipelineFailed
    | ShardAssigned
    | ShardCompleted
    | ShardReleased
    | ShardFailed
)
