"""The operation semantics of DESIGN §3, one scenario each."""

from __future__ import annotations

import pytest

from inferno.events import State, decide, evolve
from inferno.events.commands import (
    AssignWork,
    CloneIntoContext,
    ClonePipeline,
    CreateExperiment,
    DeletePipeline,
    ExecutorSlot,
    ExpireExecutor,
    ResumePipeline,
    ShardErrored,
    ShardFinished,
    StopPipeline,
)
from inferno.events.events import (
    ExperimentCompleted,
    OperationFailed,
    PipelineCompleted,
    PipelineFailed,
    ShardAssigned,
    ShardCompleted,
    ShardFailed,
    ShardReleased,
)
from inferno.events.model import (
    MAX_ATTEMPTS,
    MAX_NAME_LENGTH,
    MAX_RETRY_BACKOFF_S,
    EndpointLimit,
    PipelineChanges,
    PipelineSpec,
    ShardStats,
)
from inferno.events.preconditions import Refusal, clone_name, refusal
from inferno.readmodels import ReadModel, apply_command, apply_event


class Harness:
    """Feeds messages through decide/evolve with increasing sequences and a settable clock, and
    folds what a reader would see (commands and events) into a read model."""

    def __init__(self) -> None:
        self.state = State()
        self.model = ReadModel()
        self.cmd_seq = 0
        self.evt_seq = 0
        self.report_seq = 0
        self.now = 100.0

    def command(self, cmd):
        self.cmd_seq += 1
        apply_command(self.model, self.cmd_seq, cmd)
        return self._apply(decide(self.state, cmd, now=self.now, seq=self.cmd_seq))

    def report(self, report):
        self.report_seq += 1
        return self._apply(decide(self.state, report, now=self.now, seq=self.report_seq))

    def tick(self, tick):
        return self._apply(decide(self.state, tick, now=self.now))

    def assign(self, slots: int = 1, executor: str = "ex-1"):
        slot = ExecutorSlot(executor_id=executor, backends=frozenset({"sim"}), free_slots=slots)
        return self.tick(AssignWork(executors=(slot,)))

    def finish(self, assigned: ShardAssigned, rows: int = 5):
        return self.report(
            ShardFinished(
                executor_id=assigned.executor_id,
                pipeline_id=assigned.pipeline_id,
                shard=assigned.shard,
                attempt=assigned.attempt,
                stats=ShardStats(rows=rows),
            )
        )

    def _apply(self, events):
        for event in events:
            evolve(self.state, event)
            self.evt_seq += 1
            apply_event(self.model, self.evt_seq, event)
        return events


def experiment(pipelines: int = 1, shards: int = 4, max_attempts: int = 3) -> CreateExperiment:
    return CreateExperiment(
        experiment_id="exp-1",
        context_id="ctx-1",
        experiment_name="arith",
        dataset_ref="sha256-abc",
        row_count=shards * 5,
        num_shards=shards,
        pipelines=[
            PipelineSpec(pipeline_name=f"p{i}", pipeline_type="sim", model_config={"model": "m"})
            for i in range(pipelines)
        ],
        max_attempts=max_attempts,
        retry_backoff_s=2.0,
    )


@pytest.fixture
def h() -> Harness:
    harness = Harness()
    harness.command(experiment())
    return harness


def test_create_assigns_sequential_pipeline_ids():
    h = Harness()
    h.command(experiment(pipelines=3))
    op = h.model.operations[1]
    assert op.status == "completed"
    assert op.result["pipeline_ids"] == [1, 2, 3]
    assert [p.status for p in h.state.pipelines.values()] == ["new"] * 3


def test_stop_halts_dispatch_and_the_in_flight_shard_drains_and_counts(h):
    (first,) = h.assign()
    h.command(StopPipeline(pipeline_id=1))
    pipeline = h.state.pipelines[1]
    assert pipeline.status == "stopped"
    assert list(pipeline.in_flight) == [first.shard]
    assert h.assign() == []  # no new shard for a stopped pipeline
    h.finish(first)
    assert pipeline.completed == {0}
    assert pipeline.in_flight == {}


def test_resume_continues_at_the_first_incomplete_shard(h):
    for _ in range(2):
        (assigned,) = h.assign()
        h.finish(assigned)
    h.command(StopPipeline(pipeline_id=1))
    h.command(ResumePipeline(pipeline_id=1))
    assert h.state.pipelines[1].status == "ongoing"
    (assigned,) = h.assign()
    assert assigned.shard == 2


def test_delete_aborts_in_flight_work_and_late_results_are_ignored(h):
    (assigned,) = h.assign()
    events = h.command(DeletePipeline(pipeline_id=1))
    assert h.model.operations[1 + 1].result == {"aborted_shards": [0]}
    assert any(isinstance(e, ExperimentCompleted) for e in events)
    assert h.state.pipelines[1].in_flight == {}
    assert h.finish(assigned) == []
    assert h.assign() == []


def test_clone_links_to_its_parent_and_merges_changes(h):
    h.command(ClonePipeline(pipeline_id=1, changes=PipelineChanges(sampling_params={"t": 0.7})))
    clone = h.model.pipelines[2]
    assert clone.parent_pipeline_id == 1
    assert clone.source == "clone"
    assert clone.context_id == "ctx-1"
    assert clone.spec.model_config == {"model": "m"}
    assert clone.spec.sampling_params == {"t": 0.7}
    assert h.model.operations[2].result == {"pipeline_id": 2}


def test_a_clone_keeps_its_parents_endpoint_limit_unless_it_names_another(h):
    h.command(ClonePipeline(pipeline_id=1, changes=PipelineChanges(rpm_limit=5)))
    assert h.model.pipelines[2].spec.endpoint_limit is None
    shared = EndpointLimit(name="acct", tpm_limit=900)
    h.command(ClonePipeline(pipeline_id=2, changes=PipelineChanges(endpoint_limit=shared)))
    h.command(ClonePipeline(pipeline_id=3, changes=PipelineChanges(sampling_params={"t": 1})))
    assert h.model.pipelines[3].spec.endpoint_limit == shared
    assert (h.model.pipelines[4].spec.endpoint_limit, h.model.pipelines[4].spec.rpm_limit) == (
        shared,
        5,
    )


def test_clone_into_context_needs_an_existing_context(h):
    spec = PipelineSpec(pipeline_name="x", pipeline_type="sim")
    h.command(CloneIntoContext(context_id="nope", spec=spec))
    assert h.model.operations[2].error == "context nope does not exist"
    h.command(CloneIntoContext(context_id="ctx-1", spec=spec))
    assert h.model.pipelines[2].parent_pipeline_id is None


@pytest.mark.parametrize(
    ("setup", "command", "error"),
    [
        ([], ResumePipeline(pipeline_id=1), "cannot resume pipeline 1: it is new"),
        ([DeletePipeline(pipeline_id=1)], StopPipeline(pipeline_id=1), "it is deleted"),
        ([DeletePipeline(pipeline_id=1)], DeletePipeline(pipeline_id=1), "already deleted"),
        ([], StopPipeline(pipeline_id=9), "pipeline 9 does not exist"),
        ([], experiment(), "experiment exp-1 already exists"),
        ([], StopPipeline(pipeline_id=1, reason="x" * 1001), "reason is 1001 characters"),
        (
            [ClonePipeline(pipeline_id=1, changes=PipelineChanges(pipeline_name="b"))],
            ClonePipeline(pipeline_id=1, changes=PipelineChanges(pipeline_name="b")),
            "pipeline name 'b' is taken in this experiment by pipeline 2",
        ),
    ],
)
def test_invalid_transitions_fail_the_operation_and_change_nothing(h, setup, command, error):
    for cmd in setup:
        h.command(cmd)
    pipelines_before = {pid: p.status for pid, p in h.state.pipelines.items()}
    # the api asks the same question of its read model before appending: the same answer
    predicted = refusal(h.model, command)
    (failed,) = h.command(command)
    assert isinstance(failed, OperationFailed)
    assert error in failed.error
    assert predicted is not None
    assert predicted.reason == failed.error
    assert h.model.operations[h.cmd_seq].status == "failed"
    assert {pid: p.status for pid, p in h.state.pipelines.items()} == pipelines_before


def test_an_outcome_records_the_decision_and_the_command_the_rest():
    """Events carry no copies of the command: who, when, why and what come from CMD[ic_id]."""
    h = Harness()
    h.now = 5.0
    (created,) = h.command(experiment())
    (stopped,) = h.command(StopPipeline(pipeline_id=1, issued_at=4.0, actor="ana", reason="slow"))
    (failed,) = h.command(StopPipeline(pipeline_id=1, issued_at=4.5, actor="bo"))
    assert created.created_at == stopped.created_at == 0.0
    assert (failed.operation, failed.pipeline_id, failed.created_at) == ("", None, 0.0)
    stop, refused = h.model.operations[2], h.model.operations[3]
    assert (stop.actor, stop.reason, stop.created_at, stop.processed_at) == (
        "ana",
        "slow",
        4.0,
        5.0,
    )
    assert (refused.operation, refused.pipeline_id, refused.actor) == ("stop", 1, "bo")
    assert refused.status == "failed"


def test_a_missing_target_is_named_for_the_api_404():
    h = Harness()
    assert refusal(h.model, StopPipeline(pipeline_id=9)) == Refusal(
        "pipeline 9 does not exist", "pipeline 9"
    )
    clone = CloneIntoContext(
        context_id="c", spec=PipelineSpec(pipeline_name="x", pipeline_type="sim")
    )
    assert refusal(h.state, clone) == Refusal("context c does not exist", "context c")


def test_a_command_already_decided_is_not_decided_again(h):
    assert decide(h.state, StopPipeline(pipeline_id=1), now=1.0, seq=h.cmd_seq) == []


def test_last_shard_completes_pipeline_and_experiment(h):
    for _ in range(4):
        (assigned,) = h.assign()
        events = h.finish(assigned)
    assert [type(e) for e in events] == [ShardCompleted, PipelineCompleted, ExperimentCompleted]
    assert h.model.pipelines[1].rows_processed == 20


def test_retryable_errors_back_off_then_fail_the_pipeline():
    h = Harness()
    h.command(experiment(max_attempts=2))
    h.assign()
    (released,) = h.report(
        ShardErrored(executor_id="ex-1", pipeline_id=1, shard=0, attempt=1, error="oom")
    )
    assert isinstance(released, ShardReleased)
    assert released.retry_at == h.now + 2.0
    assert [e.shard for e in h.assign()] == [1]  # shard 0 waits out its backoff
    h.now += 2.0
    (retry,) = h.assign()
    assert (retry.shard, retry.attempt) == (0, 2)
    events = h.report(
        ShardErrored(executor_id="ex-1", pipeline_id=1, shard=0, attempt=2, error="oom")
    )
    assert [type(e) for e in events] == [ShardFailed, PipelineFailed, ExperimentCompleted]
    assert h.model.pipelines[1].failure == "shard 0 failed: oom (attempt 2 of 2)"


def test_a_stale_attempt_cannot_complete_a_shard(h):
    (assigned,) = h.assign()
    h.tick(ExpireExecutor(executor_id="ex-1"))
    h.now += 10
    (again,) = h.assign(executor="ex-2")
    assert again.attempt == 2
    assert h.finish(assigned) == []  # the first executor came back too late
    assert [type(e) for e in h.finish(again)] == [ShardCompleted]


def test_a_lapse_that_fails_every_pipeline_completes_the_experiment_once():
    h = Harness()
    h.command(experiment(pipelines=2, max_attempts=1))
    h.assign(slots=2)
    events = h.tick(ExpireExecutor(executor_id="ex-1"))
    assert [type(e) for e in events].count(PipelineFailed) == 2
    assert [type(e) for e in events].count(ExperimentCompleted) == 1
    assert isinstance(events[-1], ExperimentCompleted)


# issue 7: names unique per experiment, bounds, capped backoff


def test_pipeline_names_are_unique_among_an_experiments_live_pipelines():
    h = Harness()
    h.command(experiment(pipelines=2))  # p0 (1), p1 (2)
    (taken,) = h.command(ClonePipeline(pipeline_id=1, changes=PipelineChanges(pipeline_name="p1")))
    assert isinstance(taken, OperationFailed)
    assert "pipeline name 'p1' is taken in this experiment by pipeline 2" in taken.error
    spec = PipelineSpec(pipeline_name="p0", pipeline_type="sim")
    (into,) = h.command(CloneIntoContext(context_id="ctx-1", spec=spec))
    assert isinstance(into, OperationFailed)
    assert "'p0' is taken" in into.error
    assert sorted(h.state.pipelines) == [1, 2]
    h.command(DeletePipeline(pipeline_id=2))  # a deleted pipeline's name is free again
    h.command(ClonePipeline(pipeline_id=1, changes=PipelineChanges(pipeline_name="p1")))
    assert h.state.pipelines[3].spec.pipeline_name == "p1"


def test_an_experiment_with_a_name_twice_is_refused():
    h = Harness()
    twice = experiment(pipelines=2)
    twice.pipelines[1].pipeline_name = "p0"
    (failed,) = h.command(twice)
    assert isinstance(failed, OperationFailed)
    assert "pipeline name 'p0' is given twice" in failed.error
    assert h.state.experiments == {}


def test_a_clone_without_a_name_gets_the_first_free_one():
    h = Harness()
    h.command(experiment())
    for _ in range(3):
        h.command(ClonePipeline(pipeline_id=1))
    assert [p.spec.pipeline_name for p in h.state.pipelines.values()] == [
        "p0",
        "p0-clone",
        "p0-clone-2",
        "p0-clone-3",
    ]
    assert clone_name("x" * MAX_NAME_LENGTH, {"x" * 250 + "-clone"}) == "x" * 248 + "-clone-2"


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"max_attempts": MAX_ATTEMPTS + 1}, "max_attempts must be between 1 and 100"),
        ({"retry_backoff_s": 1e308}, "retry_backoff_s must be between 0 and 3600 seconds"),
        ({"experiment_name": "e" * 257}, "experiment name is longer than 256 characters"),
    ],
)
def test_decide_refuses_what_is_out_of_bounds(changes, error):
    h = Harness()
    command = experiment()
    for field, value in changes.items():
        setattr(command, field, value)
    (failed,) = h.command(command)
    assert isinstance(failed, OperationFailed)
    assert error in failed.error
    assert h.state.experiments == {}


def test_the_backoff_is_capped_whatever_an_old_log_holds():
    """`retry_backoff_s: 1e308` left a pipeline ongoing forever: its retry was due in 1e308 s."""
    h = Harness()
    h.command(experiment())
    old = h.state.experiments["exp-1"]  # as a log written before the bounds folds it
    old.retry_backoff_s, old.max_attempts = 1e308, 5000
    h.assign()
    (released,) = h.report(
        ShardErrored(executor_id="ex-1", pipeline_id=1, shard=0, attempt=1, error="oom")
    )
    assert released.retry_at == h.now + MAX_RETRY_BACKOFF_S
    h.state.pipelines[1].attempts[1] = 1999  # the 2000th attempt: 2**1999 overflows a float
    old.retry_backoff_s = 1.0
    (assigned,) = h.assign()
    assert (assigned.shard, assigned.attempt) == (1, 2000)
    (again,) = h.report(
        ShardErrored(executor_id="ex-1", pipeline_id=1, shard=1, attempt=2000, error="oom")
    )
    assert again.retry_at == h.now + MAX_RETRY_BACKOFF_S
