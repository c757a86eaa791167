"""Properties of decide/evolve over arbitrary sequences of commands, reports and ticks."""

from __future__ import annotations

from hypothesis import given, settings

from inferno.events import decode_event, encode, fold, snapshot
from inferno.events.events import (
    ExperimentCreated,
    OperationFailed,
    PipelineCreated,
    PipelineDeleted,
    ShardAssigned,
    ShardCompleted,
)
from tests.histories import run, runs


@settings(max_examples=150, deadline=None)
@given(runs)
def test_folding_is_deterministic_and_replay_gives_the_same_state(actions):
    state, log, *_ = run(actions)
    again, log_again, *_ = run(actions)
    assert [encode(e) for e in log] == [encode(e) for e in log_again]
    assert snapshot(state) == snapshot(again)
    replayed = fold(decode_event(encode(e)) for e in log)
    assert snapshot(replayed) == snapshot(state)


@settings(max_examples=150, deadline=None)
@given(runs)
def test_a_shard_completes_at_most_once(actions):
    log = run(actions).log
    completions = [(e.pipeline_id, e.shard) for e in log if isinstance(e, ShardCompleted)]
    assert len(completions) == len(set(completions))


@settings(max_examples=150, deadline=None)
@given(runs)
def test_a_deleted_pipeline_never_gets_work_again(actions):
    log = run(actions).log
    deleted: set[int] = set()
    for event in log:
        if isinstance(event, PipelineDeleted):
            deleted.add(event.pipeline_id)
        elif isinstance(event, ShardAssigned | ShardCompleted):
            assert event.pipeline_id not in deleted


@settings(max_examples=150, deadline=None)
@given(runs)
def test_operation_statuses_only_move_forward(actions):
    rank = {"pending": 0, "processing": 1, "completed": 2, "failed": 2}
    result = run(actions)
    for ic_id, statuses in result.statuses.items():
        assert statuses[0] == "pending", ic_id
        assert statuses[-1] in ("completed", "failed")  # every command gets decided
        ranks = [rank[s] for s in statuses]
        assert ranks == sorted(set(ranks)), statuses


@settings(max_examples=150, deadline=None)
@given(runs)
def test_ids_never_repeat(actions):
    log = run(actions).log
    pipeline_ids = [e.pipeline_id for e in log if isinstance(e, PipelineCreated)]
    for e in log:
        if isinstance(e, ExperimentCreated):
            pipeline_ids += range(e.first_pipeline_id, e.first_pipeline_id + len(e.pipelines))
    settled = [e.ic_id for e in log if getattr(e, "ic_id", 0)]
    assert len(pipeline_ids) == len(set(pipeline_ids))
    assert len(settled) == len(set(settled)), "an operation was decided twice"


@settings(max_examples=150, deadline=None)
@given(runs)
def test_a_failed_operation_changes_nothing_else(actions):
    result = run(actions)
    for message, events in result.decisions:
        if any(isinstance(e, OperationFailed) for e in events):
            (failed,) = events
            assert failed.error
            assert not failed.operation, "events record facts, not copies of the command"
            op = result.model.operations[failed.ic_id]  # the reader joins them on the ic_id
            assert (op.operation, op.error) == (message.operation, failed.error)
