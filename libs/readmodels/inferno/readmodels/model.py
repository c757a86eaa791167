"""The read model's types: pipelines with progress and metrics, experiments, operations.

Everything here is derived from the log and can be rebuilt from it at any time; nothing here is
read by `decide` (that is `inferno.events.state`). Snapshots store this shape, so a change to it
bumps `READ_MODEL_VERSION` and old snapshots are replayed instead.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from inferno.events.model import (
    Budget,
    EvalSpec,
    MetricStats,
    PipelineSpec,
    Policy,
    RowOrder,
    Segment,
)
from inferno.events.sequences import Prefix
from inferno.events.state import Assignment, PipelineStatus

READ_MODEL_VERSION = 4
OperationStatus = Literal["pending", "processing", "completed", "failed"]
FINAL: frozenset[str] = frozenset({"completed", "failed"})


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
    completed: dict[int, int] = msgspec.field(default_factory=dict)  # shard -> its report's seq
    in_flight: dict[int, Assignment] = msgspec.field(default_factory=dict)
    failure: str | None = None
    # merged from the completed shards' statistics, shard by shard
    metrics: dict[str, MetricStats] = msgspec.field(default_factory=dict)
    rows_processed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms_buckets: list[int] = msgspec.field(default_factory=list)
    busy_s: float = 0.0  # the completed shards' durations, summed
    row_errors: int = 0  # rows the engine failed on (they have no scores)
    sequence: Prefix | None = None  # the 0/1 metrics' confidence sequences (shuffled rows)
    added_sequences: dict[int, Prefix] = msgspec.field(default_factory=dict)
    """The same over the rows each extension added, by segment (1, 2, ...)."""
    pruned: str | None = None  # why the experiment's policy stopped it (until resumed)
    over_budget: str | None = None  # why a budget stopped it (until raised or resumed)
    errored: set[int] = msgspec.field(default_factory=set)  # completed shards with row errors
    repairs: dict[int, list[int]] = msgspec.field(default_factory=dict)
    """shard -> the reports of its repairs (after retries), whose rows replace the shard's"""

    @property
    def repairable(self) -> bool:
        return bool(self.errored)


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
    row_order: RowOrder | None = None
    policy: Policy = msgspec.field(default_factory=Policy)
    budget: Budget | None = None
    prompt_tokens: int | None = None  # estimated, when a budget needed it
    segments: list[Segment] = msgspec.field(default_factory=list)  # rows extensions added


class Operation(msgspec.Struct, kw_only=True):
    """CMD[ic_id] joined with the first event that carries the ic_id: the command says what was
    asked, by whom, when and why; the event says how it ended and when."""

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
    actor: str | None = None
    reason: str | None = None
    trace_id: str | None = None


class ReadModel(msgspec.Struct, kw_only=True):
    """`cmd_seq` and `evt_seq`: the last sequence of each stream folded in (where a catch-up
    after a snapshot starts); `pending`: the ic_ids whose command is in but no outcome yet."""

    experiments: dict[str, Experiment] = msgspec.field(default_factory=dict)
    contexts: dict[str, str] = msgspec.field(default_factory=dict)
    pipelines: dict[int, Pipeline] = msgspec.field(default_factory=dict)
    operations: dict[int, Operation] = msgspec.field(default_factory=dict)
    pending: set[int] = msgspec.field(default_factory=set)
    cmd_seq: int = 0
    evt_seq: int = 0
    events_applied: int = 0
    unknown_events: int = 0

    def undecided(self, pipeline_id: int) -> bool:
        """Whether a command on this pipeline waits for the scheduler: until it is decided, the
        pipeline may be about to change (stop, then resume at once, is valid)."""
        operations = self.operations
        return any(operations[i].pipeline_id == pipeline_id for i in self.pending)


def encoded(model: ReadModel) -> bytes:
    """A canonical encoding: two read models are the same exactly when these bytes are equal."""
    return msgspec.json.encode(msgspec.to_builtins(model, str_keys=True, order="deterministic"))
