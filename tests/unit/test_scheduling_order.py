"""Placement keeps its order at fleet size: the heap in `plan_assignments` places exactly what
re-sorting every runnable pipeline before each placement (its earlier form, kept here as the
reference) placed, on random states with and without declared resources."""

from __future__ import annotations

import random

from inferno.events import State
from inferno.events.commands import ExecutorSlot
from inferno.events.model import PipelineSpec
from inferno.events.resources import needs, needs_gpu
from inferno.events.scheduling import (
    Demand,
    Placement,
    _pick_executor,
    model_key,
    next_shard,
    plan_assignments,
)
from inferno.events.state import Assignment
from tests.unit.test_scheduling import state_with


def reference_plan(state: State, executors: list[ExecutorSlot], now: float) -> list[Placement]:
    """Before each placement, sort the runnable pipelines by (in flight, completed, id) and
    place the first one that has a shard and an able executor."""
    free = {e.executor_id: e.free_slots for e in executors if e.free_slots > 0}
    loaded = {e.executor_id: set(e.loaded_models) for e in executors}
    by_id = {e.executor_id: e for e in executors}
    spare = {e.executor_id: dict(e.free) for e in executors}
    candidates = [p for p in state.pipelines.values() if p.runnable]
    demand = {p.pipeline_id: Demand(needs(p.spec), needs_gpu(p.spec)) for p in candidates}
    in_flight = {p.pipeline_id: len(p.in_flight) for p in candidates}
    planned: dict[int, set[int]] = {p.pipeline_id: set() for p in candidates}
    placements: list[Placement] = []
    while free:
        candidates.sort(key=lambda p: (in_flight[p.pipeline_id], len(p.completed), p.pipeline_id))
        for p in candidates:
            shard = next_shard(p, now, planned[p.pipeline_id])
            wants = demand[p.pipeline_id]
            executor_id = (
                None if shard is None else _pick_executor(p, wants, free, spare, by_id, loaded)
            )
            if shard is None or executor_id is None:
                continue
            placements.append(
                Placement(p.pipeline_id, shard, p.attempts.get(shard, 0) + 1, executor_id)
            )
            planned[p.pipeline_id].add(shard)
            in_flight[p.pipeline_id] += 1
            loaded[executor_id].add(model_key(p))
            for key, amount in wants.resources.items():
                spare[executor_id][key] -= amount
            free[executor_id] -= 1
            if free[executor_id] == 0:
                del free[executor_id]
            break
        else:
            break
    return placements


def random_state(rng: random.Random) -> tuple[State, list[ExecutorSlot]]:
    kinds, models = ("sim", "openai", "vllm"), ("a", "b", "c")
    specs = [
        PipelineSpec(
            pipeline_name=f"p{i}",
            pipeline_type=rng.choice(kinds),
            model_config={"model": rng.choice(models)},
            resources=rng.choice(({}, {}, {"gpu_mem_gb": 40.0}, {"gpus": 1.0})),
        )
        for i in range(rng.randint(1, 12))
    ]
    shards = rng.randint(1, 6)
    state = state_with(*specs, shards=shards)
    for pipeline in state.pipelines.values():
        pipeline.status = rng.choice(("new", "ongoing", "ongoing", "stopped", "completed"))
        for shard in range(shards):
            roll = rng.random()
            if roll < 0.3:
                pipeline.completed.add(shard)
            elif roll < 0.5:
                pipeline.in_flight[shard] = Assignment(f"x{rng.randint(0, 3)}", 1, 0.0)
            elif roll < 0.6:
                pipeline.attempts[shard] = rng.randint(1, 3)
                pipeline.retry_at[shard] = rng.choice((5.0, 20.0))
    executors = [
        ExecutorSlot(
            executor_id=f"x{i}",
            backends=frozenset(rng.sample(kinds, rng.randint(1, 3))),
            free_slots=rng.randint(0, 3),
            loaded_models=frozenset(f"sim:{m}" for m in rng.sample(models, rng.randint(0, 2))),
            has_gpu=(gpu := rng.random() < 0.5),
            free={"gpus": 2.0, "gpu_mem_gb": rng.choice((30.0, 80.0))} if gpu else {},
        )
        for i in range(rng.randint(1, 5))
    ]
    return state, executors


def test_the_heap_places_what_sorting_before_each_placement_placed():
    rng = random.Random(10)
    placed = with_resources = 0
    for _ in range(500):
        state, executors = random_state(rng)
        expected = reference_plan(state, executors, now=10.0)
        assert plan_assignments(state, executors, now=10.0) == expected
        placed += len(expected)
        with_resources += sum(bool(state.pipelines[p.pipeline_id].spec.resources) for p in expected)
    # the states were not trivially empty
    assert placed > 800
    assert with_resources > 100


def test_a_fleet_sized_plan_keeps_lockstep():
    """1,000 pipelines, 512 free slots (bench/fleet.py's size): one shard to each of the 512
    pipelines first in the order, none twice."""
    specs = [PipelineSpec(pipeline_name=f"p{i}", pipeline_type="sim") for i in range(1000)]
    state = state_with(*specs, shards=100)
    for pipeline_id in range(1, 11):  # these are ahead: they go last
        state.pipelines[pipeline_id].completed.add(0)
    executors = [
        ExecutorSlot(executor_id=f"x{i}", backends=frozenset({"sim"}), free_slots=2)
        for i in range(256)
    ]
    placements = plan_assignments(state, executors, now=0.0)
    assert [p.pipeline_id for p in placements] == list(range(11, 523))
    assert {p.shard for p in placements} == {0}
