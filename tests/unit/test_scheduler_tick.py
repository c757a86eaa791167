"""`tick_messages`: which executors a scheduler tick expires, and what capacity it offers."""

from __future__ import annotations

import msgspec

from inferno.events import State, decide, evolve
from inferno.events.commands import AssignWork, CreateExperiment, ExecutorSlot
from inferno.events.model import PipelineSpec
from inferno.events.work import ExecutorInfo, queue_capacity
from inferno.scheduler.roster import tick_messages
from tests.unit.test_scheduling import state_with

NOW = 1000.0
TTL = 10.0


def _info(
    executor_id: str, *, age: float = 0.0, slots: int = 2, queue: int = 0, loaded: str = ""
) -> ExecutorInfo:
    return ExecutorInfo(
        executor_id=executor_id,
        backends=["sim"],
        slots=slots,
        queue=queue,
        loaded_models=[loaded] if loaded else [],
        heartbeat_at=NOW - age,
    )


def _state_with_work_on(executor_id: str, shards: int) -> State:
    """One pipeline with `shards` shards in flight on `executor_id`."""
    state = State()
    create = CreateExperiment(
        experiment_id="x",
        context_id="c",
        experiment_name="x",
        dataset_ref="sha256-0",
        row_count=10,
        num_shards=5,
        pipelines=[PipelineSpec(pipeline_name="p", pipeline_type="sim")],
    )
    for event in decide(state, create, now=NOW, seq=1):
        evolve(state, event)
    slot = ExecutorSlot(executor_id=executor_id, backends=frozenset({"sim"}), free_slots=shards)
    for event in decide(state, AssignWork(executors=(slot,)), now=NOW):
        evolve(state, event)
    return state


def test_capacity_counts_the_states_assignments_not_the_heartbeat():
    state = _state_with_work_on("a", 2)
    expired, assign = tick_messages(
        state,
        {"a": _info("a", slots=3), "b": _info("b")},
        now=NOW,
        heartbeat_ttl_s=TTL,
        expire=True,
    )
    assert expired == []
    assert {s.executor_id: s.free_slots for s in assign.executors} == {"a": 1, "b": 2}


def test_an_executor_with_work_and_no_heartbeat_is_expired_only_after_the_grace():
    state = _state_with_work_on("a", 1)
    during_grace = tick_messages(state, {}, now=NOW, heartbeat_ttl_s=TTL, expire=False)
    assert during_grace[0] == []
    expired, assign = tick_messages(state, {}, now=NOW, heartbeat_ttl_s=TTL, expire=True)
    assert [e.executor_id for e in expired] == ["a"]
    assert assign.executors == ()


def test_a_stale_heartbeat_expires_its_work_and_offers_no_capacity():
    state = _state_with_work_on("a", 1)
    executors = {"a": _info("a", age=TTL + 1), "b": _info("b", age=TTL - 1)}
    expired, assign = tick_messages(state, executors, now=NOW, heartbeat_ttl_s=TTL, expire=True)
    assert [e.executor_id for e in expired] == ["a"]
    assert [s.executor_id for s in assign.executors] == ["b"]


def test_an_idle_executor_is_never_expired():
    expired, assign = tick_messages(
        State(), {"a": _info("a", age=TTL + 1)}, now=NOW, heartbeat_ttl_s=TTL, expire=True
    )
    assert (expired, assign.executors) == ([], ())


def test_queues_are_offered_after_the_slots_less_what_is_assigned():
    state = _state_with_work_on("a", 2)
    executors = {
        "a": ExecutorInfo(executor_id="a", backends=["sim"], slots=2, queue=2, heartbeat_at=NOW),
        "b": ExecutorInfo(executor_id="b", backends=["sim"], slots=2, queue=1, heartbeat_at=NOW),
        "c": _info("c"),  # no queue: offered in the first pass only
    }
    _, assign = tick_messages(state, executors, now=NOW, heartbeat_ttl_s=TTL, expire=True)
    assert {s.executor_id: s.free_slots for s in assign.executors} == {"a": 0, "b": 2, "c": 2}
    queues = queue_capacity(state, assign, executors)
    assert {s.executor_id: s.free_slots for s in queues.executors} == {"a": 2, "b": 3}


def test_slots_fill_before_queues_so_work_spreads_over_executors():
    state = _state_with_work_on("a", 0)
    executors = {
        eid: ExecutorInfo(executor_id=eid, backends=["sim"], slots=1, queue=1, heartbeat_at=NOW)
        for eid in ("a", "b")
    }
    _, assign = tick_messages(state, executors, now=NOW, heartbeat_ttl_s=TTL, expire=True)
    first = decide(state, assign, now=NOW)
    for event in first:
        evolve(state, event)
    second = decide(state, queue_capacity(state, assign, executors), now=NOW)
    assert (
        sorted(e.executor_id for e in first)
        == sorted(e.executor_id for e in second)
        == [
            "a",
            "b",
        ]
    )


def _queue_passes(state: State, assign: AssignWork, executors: dict[str, ExecutorInfo]) -> list:
    """Both queue passes, as the leader runs them after the slots' pass."""
    placed = []
    for deep in (False, True):
        events = decide(state, queue_capacity(state, assign, executors, deep=deep), now=NOW)
        for event in events:
            evolve(state, event)
        placed += events
    return placed


def test_a_queue_takes_only_shards_of_a_model_the_executor_has_or_runs():
    specs = [
        PipelineSpec(pipeline_name=f"p{m}", pipeline_type="sim", model_config={"model": m})
        for m in ("m1", "m2")
    ]
    state = state_with(*specs, shards=5)
    info = _info("a", slots=1, queue=2, loaded="sim:m1")
    _, assign = tick_messages(state, {"a": info}, now=NOW, heartbeat_ttl_s=TTL, expire=True)
    [first] = decide(state, assign, now=NOW)
    evolve(state, first)
    queued = _queue_passes(state, assign, {"a": info})
    assert [(e.pipeline_id, e.executor_id) for e in queued] == [(first.pipeline_id, "a")] * 2


def test_orders_beyond_one_a_slot_take_only_the_loaded_models_shards():
    """A queue deepened for m1's short shards must not fill with m2's, which it never timed."""
    spec = PipelineSpec(pipeline_name="p2", pipeline_type="sim", model_config={"model": "m2"})
    state = state_with(spec, shards=10)
    info = _info("a", slots=2, queue=8, loaded="sim:m1")
    _, assign = tick_messages(state, {"a": info}, now=NOW, heartbeat_ttl_s=TTL, expire=True)
    for event in (running := decide(state, assign, now=NOW)):
        evolve(state, event)
    queued = _queue_passes(state, assign, {"a": info})
    assert (len(running), len(queued)) == (2, 2)  # two slots, and one order a slot queued
    loaded = msgspec.structs.replace(info, loaded_models=["sim:m2"])  # its next heartbeat
    _, assign = tick_messages(state, {"a": loaded}, now=NOW, heartbeat_ttl_s=TTL, expire=True)
    assert len(_queue_passes(state, assign, {"a": loaded})) == 6  # the rest of its queue
