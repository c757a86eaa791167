"""Inputs to `decide`: commands people issue, reports executors send, and the scheduler's own ticks.

Commands and reports are stored (INFERNO_CMD, INFERNO_EXEC), so they follow the same rules as
events: explicit tags, a schema version, new fields only with defaults.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple, TypedDict

import msgspec

from inferno.events.model import (
    Budget,
    EvalSpec,
    PipelineChanges,
    PipelineSpec,
    Policy,
    RowOrder,
    Segment,
    ShardStats,
)
from inferno.events.names import Names

SCHEMA_VERSION = 1
MAX_REASON_LENGTH = 1000
"""A reason is a sentence or two for the audit trail, not a document."""


class Target(NamedTuple):
    """What a command acts on: the one place its ids are read (subject, operation, history)."""

    pipeline_id: int | None = None
    context_id: str | None = None
    experiment_id: str | None = None


class Command(msgspec.Struct, tag_field="command", kw_only=True, omit_defaults=True):
    """An interactive-control command as the api accepted it; its stream sequence is its ic_id.

    Who, why and which request: `actor` is the identity behind the token, or what a client on an
    unauthenticated loopback cluster says it is (recorded, never trusted); `reason` is the free
    text given with the write; `trace_id` ties the command to every log line it causes.
    Each concrete command says what it acts on (`target`) and where it is stored (`subject`).
    """

    operation: ClassVar[str]
    action: ClassVar[str]
    """The last token of the command's subject (`inferno.cmd.pipeline.<id>.<action>`)."""
    v: int = SCHEMA_VERSION
    issued_at: float = 0.0
    actor: str | None = None
    reason: str | None = None
    trace_id: str | None = None


class PipelineCommand(Command, kw_only=True):
    """A command on one existing pipeline."""

    pipeline_id: int

    @property
    def target(self) -> Target:
        return Target(pipeline_id=self.pipeline_id)

    def subject(self, names: Names) -> str:
        return names.pipeline_cmd(self.pipeline_id, self.action)


class CreateExperiment(Command, tag="create_experiment"):
    operation = "create_experiment"
    action = "create"
    experiment_id: str
    context_id: str
    experiment_name: str
    dataset_ref: str
    row_count: int
    num_shards: int
    eval: EvalSpec = msgspec.field(default_factory=EvalSpec)
    pipelines: list[PipelineSpec] = []
    max_attempts: int = 3
    retry_backoff_s: float = 1.0
    row_order: RowOrder | None = None  # the api draws the seed, so replay decides the same
    policy: Policy = msgspec.field(default_factory=Policy)
    budget: Budget | None = None  # all pipelines together; each may have its own too
    prompt_tokens: int | None = None
    """The api's estimate of all rows' prompt tokens, when a budget needs it (budgets.py)."""

    @property
    def target(self) -> Target:
        return Target(context_id=self.context_id, experiment_id=self.experiment_id)

    def subject(self, names: Names) -> str:
        return names.experiment_cmd(self.experiment_id, self.action)


class StopPipeline(PipelineCommand, tag="stop_pipeline"):
    operation = action = "stop"


class ResumePipeline(PipelineCommand, tag="resume_pipeline"):
    operation = action = "resume"


class RetryPipeline(PipelineCommand, tag="retry_pipeline"):
    """Run a failed pipeline's failed shards again, and the shards it never ran, and the rows
    its completed shards have no answer for (a completed pipeline with row errors too); what
    was answered stands. Each retried shard gets the experiment's `max_attempts` anew."""

    operation = action = "retry"


class DeletePipeline(PipelineCommand, tag="delete_pipeline"):
    operation = action = "delete"


class ClonePipeline(PipelineCommand, tag="clone_pipeline"):
    """Copy a pipeline into its context with some knobs changed; the clone links to its parent."""

    operation = action = "clone"
    changes: PipelineChanges = msgspec.field(default_factory=PipelineChanges)


class ExtendExperiment(Command, tag="extend_experiment", kw_only=True):
    """Add rows to an experiment: `rows` (their own dataset, shards and order; the api leaves
    `first_row` and `first_shard` to the decider) run as new shards of every pipeline, after
    the ones it has; completed work stands."""

    operation = action = "extend"
    experiment_id: str
    rows: Segment

    @property
    def target(self) -> Target:
        return Target(experiment_id=self.experiment_id)

    def subject(self, names: Names) -> str:
        return names.experiment_cmd(self.experiment_id, self.action)


class SetBudget(Command, tag="set_budget", kw_only=True):
    """Set an experiment's budget, or one pipeline's (`pipeline_id`): what `budget` gives
    replaces that field, the rest stands. The pipelines a budget stopped in its scope run again
    (and stop again if it is still too small)."""

    operation = action = "budget"
    experiment_id: str
    pipeline_id: int | None = None
    budget: Budget
    prompt_tokens: int | None = None  # the api's estimate, when the experiment has none yet

    @property
    def target(self) -> Target:
        return Target(pipeline_id=self.pipeline_id, experiment_id=self.experiment_id)

    def subject(self, names: Names) -> str:
        if self.pipeline_id is not None:
            return names.pipeline_cmd(self.pipeline_id, self.action)
        return names.experiment_cmd(self.experiment_id, self.action)


class CloneIntoContext(Command, tag="clone_into_context"):
    """The dispatcher API's clone: a new pipeline in an existing context, from a full spec."""

    operation = action = "clone"
    context_id: str
    spec: PipelineSpec

    @property
    def target(self) -> Target:
        return Target(context_id=self.context_id)

    def subject(self, names: Names) -> str:
        return names.context_cmd(self.context_id, self.action)


AnyCommand = (
    CreateExperiment
    | StopPipeline
    | ResumePipeline
    | RetryPipeline
    | DeletePipeline
    | ClonePipeline
    | CloneIntoContext
    | SetBudget
    | ExtendExperiment
)


class Report(msgspec.Struct, tag_field="report", kw_only=True, omit_defaults=True):
    """What an executor says about one attempt at one shard; stale attempts are ignored."""

    v: int = SCHEMA_VERSION
    executor_id: str
    pipeline_id: int
    shard: int
    attempt: int
    at: float = 0.0


class ReportIds(TypedDict):
    """The `Report` fields that name the attempt, for `ShardStarted(**ids, ...)` and the like."""

    executor_id: str
    pipeline_id: int
    shard: int
    attempt: int


class ShardStarted(Report, tag="shard_started"):
    """The executor began the attempt: liveness and audit only, it decides nothing."""


class ShardProgress(Report, tag="shard_progress"):
    rows_done: int = 0


class ShardFinished(Report, tag="shard_finished"):
    """`results`: the rows' results (one JSON value each, kept undecoded) when they fit in the
    message, else empty and in INFERNO_RESULTS (`inferno.jetstream.results`); the decider never
    reads them."""

    stats: ShardStats = msgspec.field(default_factory=ShardStats)
    results: list[msgspec.Raw] = msgspec.field(default_factory=list)


class ShardErrored(Report, tag="shard_errored"):
    error: str
    retryable: bool = True


class ShardAborted(Report, tag="shard_aborted"):
    """The executor gave the attempt up (shutdown, engine abort): the shard goes back to pending."""


class ShardsFinished(msgspec.Struct, tag_field="report", tag="shards_finished", kw_only=True):
    """The finished shards of one work message (`inferno.events.work.WorkBatch`) in one report:
    one fsynced message for all of them (`inferno.events.batches`). The decider decides each
    member as it would the member alone."""

    v: int = SCHEMA_VERSION
    executor_id: str
    at: float = 0.0
    reports: list[ShardFinished]


AnyReport = (
    ShardStarted | ShardProgress | ShardFinished | ShardErrored | ShardAborted | ShardsFinished
)


class ExecutorSlot(msgspec.Struct, kw_only=True, frozen=True):
    """An executor as the scheduler sees it in INFERNO_EXECUTORS at one moment."""

    executor_id: str
    backends: frozenset[str]
    free_slots: int
    loaded_models: frozenset[str] = frozenset()
    has_gpu: bool = False
    free: dict[str, float] = {}  # declared resources less what its shards in flight need
    only_models: frozenset[str] | None = None
    """Set: take only pipelines of these models (an executor's queue holds no shard that would
    make it swap models: `inferno.events.work.queue_capacity`)."""


class AssignWork(msgspec.Struct, kw_only=True, frozen=True):
    """Scheduler tick: hand pending shards to these executors."""

    executors: tuple[ExecutorSlot, ...]


class ExpireExecutor(msgspec.Struct, kw_only=True, frozen=True):
    """Scheduler tick: this executor's heartbeat lapsed, so its assignments go back to pending."""

    executor_id: str


AnyTick = AssignWork | ExpireExecutor
