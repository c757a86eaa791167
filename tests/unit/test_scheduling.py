"""The DESIGN §4 placement policy."""

from __future__ import annotations

from inferno.events import State, decide, evolve
from inferno.events.commands import AssignWork, CreateExperiment, ExecutorSlot, ShardFinished
from inferno.events.model import PipelineSpec
from inferno.events.scheduling import plan_assignments


def state_with(*specs: PipelineSpec, shards: int = 4) -> State:
    state = State()
    create = CreateExperiment(
        experiment_id="e",
        context_id="c",
        experiment_name="e",
        dataset_ref="d",
        row_count=100,
        num_shards=shards,
        pipelines=list(specs),
    )
    for event in decide(state, create, now=0.0, seq=1):
        evolve(state, event)
    return state


def sim(name: str, model: str = "m") -> PipelineSpec:
    return PipelineSpec(pipeline_name=name, pipeline_type="sim", model_config={"model": model})


def slot(eid: str, free: int = 1, backends=("sim",), loaded=(), gpu=False) -> ExecutorSlot:
    return ExecutorSlot(
        executor_id=eid,
        backends=frozenset(backends),
        free_slots=free,
        loaded_models=frozenset(loaded),
        has_gpu=gpu,
    )


def test_pipelines_advance_in_lockstep():
    state = state_with(sim("a"), sim("b"), sim("c"))
    for pid, shards in ((1, {0, 1}), (2, {0}), (3, set())):
        state.pipelines[pid].completed |= shards
    placements = plan_assignments(state, [slot("x", free=3)], now=0.0)
    assert [(p.pipeline_id, p.shard) for p in placements] == [(3, 0), (2, 1), (1, 2)]


def test_one_shard_per_pipeline_until_executors_would_idle():
    state = state_with(sim("a"), sim("b"))
    placements = plan_assignments(state, [slot("x", free=5)], now=0.0)
    assert [(p.pipeline_id, p.shard) for p in placements] == [
        (1, 0),
        (2, 0),
        (1, 1),
        (2, 1),
        (1, 2),
    ]


def test_executor_capacity_is_never_exceeded():
    state = state_with(sim("a"), sim("b"), sim("c"))
    placements = plan_assignments(state, [slot("x", 1), slot("y", 1)], now=0.0)
    assert sorted(p.executor_id for p in placements) == ["x", "y"]


def test_model_affinity_prefers_the_executor_with_the_model_loaded():
    state = state_with(sim("a", model="big"), sim("b", model="small"))
    executors = [slot("x", loaded=["sim:small"]), slot("y", loaded=["sim:big"])]
    placements = plan_assignments(state, executors, now=0.0)
    assert {(p.pipeline_id, p.executor_id) for p in placements} == {(1, "y"), (2, "x")}


def test_only_executors_with_the_backend_get_the_work():
    state = state_with(PipelineSpec(pipeline_name="g", pipeline_type="vllm"))
    assert plan_assignments(state, [slot("cpu")], now=0.0) == []
    (placement,) = plan_assignments(state, [slot("gpu", backends=("vllm",), gpu=True)], now=0.0)
    assert placement.executor_id == "gpu"


def test_stopped_and_finished_pipelines_get_nothing_and_backoff_is_respected():
    state = state_with(sim("a"), sim("b"), shards=1)
    state.pipelines[1].status = "stopped"
    state.pipelines[2].retry_at[0] = 50.0
    assert plan_assignments(state, [slot("x", 4)], now=10.0) == []
    (placement,) = plan_assignments(state, [slot("x", 4)], now=50.0)
    assert (placement.pipeline_id, placement.shard) == (2, 0)


def test_assign_work_emits_assignments_that_evolve_into_in_flight_shards():
    state = state_with(sim("a"))
    events = decide(state, AssignWork(executors=(slot("x"),)), now=5.0)
    for event in events:
        evolve(state, event)
    assert state.pipelines[1].status == "ongoing"
    assert state.pipelines[1].in_flight[0].executor_id == "x"
    finished = ShardFinished(executor_id="x", pipeline_id=1, shard=0, attempt=1)
    assert decide(state, finished, now=6.0, seq=1) != []
