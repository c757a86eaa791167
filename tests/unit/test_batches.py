"""Several shards in one message (inferno.events.batches): what is stored folds exactly as the
single events the decider decided, and a batch report is decided member by member."""

from __future__ import annotations

import msgspec
import pytest

from inferno.events import State, decide, evolve, fold, snapshot
from inferno.events.batches import (
    decide_each,
    expand_all,
    expanded,
    group_assignments,
    group_completions,
    members,
)
from inferno.events.commands import (
    AssignWork,
    CreateExperiment,
    ExecutorSlot,
    ShardFinished,
    ShardsFinished,
)
from inferno.events.events import (
    Event,
    ExperimentCompleted,
    PipelineCompleted,
    PipelineStopped,
    ShardAssigned,
    ShardCompleted,
    ShardsAssigned,
    ShardsCompleted,
)
from inferno.events.model import MetricStats, PipelineSpec, ShardStats
from inferno.events.work import (
    WorkBatch,
    assigned_batch,
    decode_work,
    in_flight_batches,
    report_msg_id,
)

STATS = ShardStats(rows=2, metrics={"exact_match": MetricStats(2, 1.0, 1.0, 0.0, 1.0)})


def created(pipelines: int = 3, shards: int = 4) -> State:
    state = State()
    specs = [
        PipelineSpec(pipeline_name=f"p{i}", pipeline_type="sim", model_config={"model": f"m{i}"})
        for i in range(pipelines)
    ]
    command = CreateExperiment(
        experiment_id="exp",
        context_id="ctx",
        experiment_name="batches",
        dataset_ref="sha256-" + "0" * 64,
        row_count=shards * 2,
        num_shards=shards,
        pipelines=specs,
    )
    for event in decide(state, command, now=1.0, seq=1):
        evolve(state, event)
    return state


def slots(*free: int) -> AssignWork:
    return AssignWork(
        executors=tuple(
            ExecutorSlot(executor_id=f"e{i}", backends=frozenset({"sim"}), free_slots=n)
            for i, n in enumerate(free)
        )
    )


def assigned(state: State, free: tuple[int, ...], now: float = 2.0) -> list[Event]:
    return decide(state, slots(*free), now=now)


def test_a_ticks_assignments_are_one_event_per_executor_and_fold_the_same():
    state = created()
    singles = assigned(state, (3, 2, 1))
    grouped = group_assignments(singles)
    assert [type(e) for e in grouped] == [ShardsAssigned, ShardsAssigned, ShardAssigned]
    assert [e.executor_id for e in grouped] == ["e0", "e1", "e2"]  # type: ignore[attr-defined]
    assert sorted(map(encode_one, expand_all(grouped))) == sorted(map(encode_one, singles))
    one_by_one, batched = created(), created()
    for event in singles:
        evolve(one_by_one, event)
    for event in grouped:
        evolve(batched, event)
    assert snapshot(one_by_one) == snapshot(batched)
    # a batch counts as its members, so the leader's count matches a replay's
    assert one_by_one.events_applied == batched.events_applied


def encode_one(event: Event) -> bytes:
    return msgspec.json.encode(event)


def test_other_events_keep_their_place_among_grouped_assignments():
    stop = PipelineStopped(at=2.0, pipeline_id=1, ic_id=5)
    a = ShardAssigned(at=2.0, pipeline_id=1, shard=0, attempt=1, executor_id="e0")
    b = ShardAssigned(at=2.0, pipeline_id=2, shard=0, attempt=1, executor_id="e1")
    c = ShardAssigned(at=2.0, pipeline_id=3, shard=0, attempt=1, executor_id="e0")
    grouped = group_assignments([stop, a, b, c])
    assert grouped[0] is stop
    assert isinstance(grouped[1], ShardsAssigned)
    assert [(s.pipeline_id, s.shard) for s in grouped[1].shards] == [(1, 0), (3, 0)]
    assert grouped[2] is b


def test_only_adjacent_completions_of_one_report_are_grouped():
    def done(pid: int, shard: int, seq: int = 7) -> ShardCompleted:
        return ShardCompleted(
            at=3.0, pipeline_id=pid, shard=shard, attempt=1, executor_id="e0", report_seq=seq
        )

    end = PipelineCompleted(at=3.0, pipeline_id=2)
    events: list[Event] = [done(1, 0), done(2, 0), end, done(1, 1), done(3, 0, seq=8)]
    grouped = group_completions(events)
    assert [type(e) for e in grouped] == [
        ShardsCompleted,
        PipelineCompleted,
        ShardCompleted,
        ShardCompleted,
    ]
    assert expand_all(grouped) == events  # exactly the same sequence back
    assert expanded(end) == [end]


def finished(state: State, pid: int, shard: int) -> ShardFinished:
    a = state.pipelines[pid].in_flight[shard]
    return ShardFinished(
        executor_id=a.executor_id, pipeline_id=pid, shard=shard, attempt=a.attempt, stats=STATS
    )


def test_a_report_of_several_shards_is_decided_member_by_member():
    state = created(pipelines=1, shards=3)
    for event in group_assignments(assigned(state, (3,))):
        evolve(state, event)
    report = ShardsFinished(executor_id="e0", reports=[finished(state, 1, s) for s in range(3)])
    with pytest.raises(TypeError, match="member by member"):
        decide(state, report, now=3.0, seq=1)
    decided = decide_each(state, report, now=3.0, seq=1)
    events = [e for _, events in decided for e in events]
    # the last member completes the pipeline, which only folding the others first can tell
    assert [type(e) for e in events] == [
        ShardCompleted,
        ShardCompleted,
        ShardCompleted,
        PipelineCompleted,
        ExperimentCompleted,
    ]
    stored = group_completions(events)
    assert [type(e) for e in stored] == [ShardsCompleted, PipelineCompleted, ExperimentCompleted]
    assert state.pipelines[1].status == "completed"
    assert state.last_report_seq == 1
    # the same report again (a follower re-fed it) decides nothing: no attempt is in flight
    assert [events for _, events in decide_each(state, report, now=4.0, seq=1)] == [[], [], []]
    assert members(report) == report.reports


def test_a_stale_member_is_ignored_and_the_others_count():
    state = created(pipelines=2, shards=2)
    for event in group_assignments(assigned(state, (2, 2))):
        evolve(state, event)
    fresh = finished(state, 1, 0)
    stale = msgspec.structs.replace(finished(state, 2, 0), attempt=9)
    decided = decide_each(
        state, ShardsFinished(executor_id="e0", reports=[stale, fresh]), now=3.0, seq=4
    )
    assert [len(events) for _, events in decided] == [0, 1]


def test_work_messages_carry_a_ticks_orders_and_resend_with_the_same_id():
    state = created()
    grouped = group_assignments(assigned(state, (3, 1)))
    for event in grouped:
        evolve(state, event)
    sent = [
        assigned_batch(state, e) for e in grouped if isinstance(e, ShardAssigned | ShardsAssigned)
    ]
    assert [len(w.orders) for w in sent] == [3, 1]
    assert sent[1].msg_id == sent[1].orders[0].msg_id  # a lone order keeps its own id
    again = in_flight_batches(state)  # what a new term sends
    assert sorted(w.msg_id for w in again) == sorted(w.msg_id for w in sent)
    reordered = WorkBatch(orders=list(reversed(sent[0].orders)))
    assert reordered.msg_id == sent[0].msg_id
    assert decode_work(msgspec.json.encode(sent[0])) == sent[0].orders
    assert decode_work(msgspec.json.encode(sent[1].orders[0])) == sent[1].orders  # a bare order


def test_a_batch_reports_id_names_its_members():
    state = created()
    for event in group_assignments(assigned(state, (3,))):
        evolve(state, event)
    reports = [finished(state, pid, 0) for pid in (1, 2, 3)]
    first = ShardsFinished(executor_id="e0", at=1.0, reports=reports)
    later = ShardsFinished(executor_id="e0", at=2.0, reports=list(reversed(reports)))
    assert report_msg_id(first) == report_msg_id(later)
    assert report_msg_id(first) != report_msg_id(
        ShardsFinished(executor_id="e0", reports=reports[:2])
    )


def test_folding_a_batch_is_folding_its_members():
    state = created()
    grouped = group_assignments(assigned(state, (2, 2, 2)))
    assert snapshot(fold(grouped, created())) == snapshot(fold(expand_all(grouped), created()))
