"""Retry: a failed pipeline runs its incomplete shards again, each with fresh attempts, and its
completed shards stand."""

from __future__ import annotations

from inferno.events.commands import (
    AssignWork,
    CreateExperiment,
    ExecutorSlot,
    RetryPipeline,
    ShardErrored,
    ShardFinished,
    StopPipeline,
)
from inferno.events.events import (
    OperationFailed,
    PipelineFailed,
    PipelineRetried,
    ShardAssigned,
    ShardCompleted,
)
from inferno.events.model import MetricStats, PipelineSpec, ShardStats
from inferno.events.preconditions import refusal
from inferno.events.work import work_order
from inferno.readmodels import ReadModel, apply_event
from tests.deciding import Decided

SLOT = ExecutorSlot(executor_id="x", backends=frozenset({"sim"}), free_slots=1)


class Run(Decided):
    """An experiment of one sim pipeline with one row per shard, decided and folded."""

    def __init__(self, *, shards: int, max_attempts: int) -> None:
        super().__init__()
        self(
            CreateExperiment(
                experiment_id="e",
                context_id="c",
                experiment_name="x",
                dataset_ref="sha256-00",
                row_count=shards,
                num_shards=shards,
                max_attempts=max_attempts,
                retry_backoff_s=0,
                pipelines=[PipelineSpec(pipeline_name="p", pipeline_type="sim")],
            )
        )

    def assign(self) -> ShardAssigned:
        [assigned] = [
            e for e in self(AssignWork(executors=(SLOT,))) if isinstance(e, ShardAssigned)
        ]
        return assigned

    def report(self, assigned: ShardAssigned, *, ok: bool) -> list[object]:
        ids = {
            "executor_id": "x",
            "pipeline_id": 1,
            "shard": assigned.shard,
            "attempt": assigned.attempt,
        }
        if ok:
            return self(ShardFinished(**ids, stats=ShardStats(rows=1)))
        return self(ShardErrored(**ids, error="endpoint down", retryable=True))


def test_a_failed_pipeline_retries_its_incomplete_shards_with_fresh_attempts():
    run = Run(shards=3, max_attempts=2)
    run.report(run.assign(), ok=True)  # shard 0 completes
    first = run.assign()
    run.report(first, ok=False)
    second = run.assign()
    assert (second.shard, second.attempt) == (first.shard, 2)
    failed = run.report(second, ok=False)
    assert any(isinstance(e, PipelineFailed) for e in failed)
    assert run.state.pipelines[1].status == "failed"

    refused = refusal(run.state, StopPipeline(pipeline_id=1))
    assert refused is not None
    [retried] = run(RetryPipeline(pipeline_id=1))
    assert isinstance(retried, PipelineRetried)
    assert (run.state.pipelines[1].status, run.state.experiments["e"].status) == (
        "ongoing",
        "running",
    )
    again = run.assign()
    assert (again.shard, again.attempt) == (first.shard, 3)  # attempts go on numbering...
    run.report(again, ok=False)  # ...but this run has two tries: one left
    last = run.assign()
    assert last.attempt == 4
    run.report(last, ok=True)
    run.report(run.assign(), ok=True)  # the shard that never ran
    done = [e.shard for e in run.log if isinstance(e, ShardCompleted)]
    assert sorted(done) == [0, 1, 2]  # shard 0 once: completed work is never redone
    assert run.state.pipelines[1].status == "completed"
    assert run.state.experiments["e"].status == "completed"


def test_only_a_failed_or_patchy_pipeline_can_be_retried():
    run = Run(shards=1, max_attempts=3)
    refused = refusal(run.state, RetryPipeline(pipeline_id=1))
    assert refused is not None
    assert refused.reason == (
        "cannot retry pipeline 1: it is new; only failed pipelines and completed ones with row"
        " errors can be retried"
    )
    [failed] = run(RetryPipeline(pipeline_id=1))
    assert isinstance(failed, OperationFailed)
    missing = refusal(run.state, RetryPipeline(pipeline_id=9))
    assert missing is not None
    assert missing.missing == "pipeline 9"


def test_a_completed_pipeline_with_row_errors_retries_just_those_rows():
    run = Run(shards=2, max_attempts=3)
    ids = {"executor_id": "x", "pipeline_id": 1}
    clean = run.assign()
    run(ShardFinished(**ids, shard=clean.shard, attempt=1, stats=ShardStats(rows=1)))
    patchy = run.assign()
    stats = ShardStats(rows=1, errors=1, error_rows=[1])
    run(ShardFinished(**ids, shard=patchy.shard, attempt=1, stats=stats))
    assert run.state.pipelines[1].status == "completed"
    model = ReadModel()
    for seq, event in enumerate(run.log, 1):
        apply_event(model, seq, event)  # type: ignore[arg-type]
    assert (model.pipelines[1].row_errors, model.pipelines[1].repairable) == (1, True)

    [retried] = run(RetryPipeline(pipeline_id=1))
    assert isinstance(retried, PipelineRetried)
    repair = run.assign()
    assert (repair.shard, repair.attempt) == (1, 2)  # only the shard with the failed row
    order = work_order(run.state.experiments["e"], run.state.pipelines[1], repair.shard)
    assert order.rows == [1]  # and only that row
    assert run(AssignWork(executors=(SLOT,))) == []  # nothing else to run
    fixed = ShardStats(rows=1, metrics={"exact_match": MetricStats(1, 1.0, 1.0, 1.0, 1.0)})
    events = run(ShardFinished(**ids, shard=1, attempt=2, stats=fixed))
    assert [type(e).__name__ for e in events] == [
        "ShardCompleted",
        "PipelineCompleted",
        "ExperimentCompleted",
    ]
    for seq, event in enumerate(events, len(run.log) - len(events) + 1):
        apply_event(model, seq, event)  # type: ignore[arg-type]
    p = model.pipelines[1]
    assert (p.status, p.row_errors, p.rows_processed, p.repairable) == ("completed", 0, 2, False)
    assert p.metrics["exact_match"].count == 1  # the repaired row's score joins the rest
    assert list(p.repairs) == [1]
    again = refusal(run.state, RetryPipeline(pipeline_id=1))
    assert again is not None
    assert again.reason.startswith("cannot retry pipeline 1: it is completed with every row")
