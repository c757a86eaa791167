"""What one placement tick costs the scheduler as pipelines grow, in-process (no I/O).

    .venv/bin/python bench/placement.py [--pipelines 100,1000,10000]

For each size: one experiment of that many `sim` pipelines × 100 shards (folded with `evolve`),
executors at 1 per 4 pipelines × 2 slots, as `bench/fleet.py` has them. Figures:
`decide(AssignWork)` filling every free slot once (the start of a run), and a steady-state tick
after it (one shard completed, its slot free, one placement), each the median of repeated calls.
The baseline is the smallest size: how the cost per tick scales with pipelines.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from inferno.events import State, decide, evolve
from inferno.events.commands import AssignWork, CreateExperiment, ExecutorSlot
from inferno.events.events import ShardAssigned, ShardCompleted
from inferno.events.model import PipelineSpec, ShardStats

SHARDS = 100


def fleet_state(pipelines: int) -> State:
    state = State()
    specs = [
        PipelineSpec(pipeline_name=f"p{i}", pipeline_type="sim", model_config={"model": f"m{i}"})
        for i in range(pipelines)
    ]
    create = CreateExperiment(
        experiment_id="e",
        context_id="c",
        experiment_name="fleet",
        dataset_ref="d",
        row_count=2 * SHARDS,
        num_shards=SHARDS,
        pipelines=specs,
    )
    for event in decide(state, create, now=0.0, seq=1):
        evolve(state, event)
    return state


def slots(executors: int, free: int) -> tuple[ExecutorSlot, ...]:
    sim = frozenset({"sim"})
    return tuple(
        ExecutorSlot(executor_id=f"x{i}", backends=sim, free_slots=free) for i in range(executors)
    )


def median_s(call: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def measure(pipelines: int) -> dict[str, float]:
    executors = max(1, pipelines // 4)
    state = fleet_state(pipelines)
    fill = AssignWork(executors=slots(executors, 2))
    fill_s = median_s(lambda: decide(state, fill, now=1.0), 1)
    events = decide(state, fill, now=1.0)
    for event in events:
        evolve(state, event)
    first = events[0]
    assert isinstance(first, ShardAssigned)
    done = ShardCompleted(
        at=2.0,
        pipeline_id=first.pipeline_id,
        shard=first.shard,
        attempt=first.attempt,
        executor_id=first.executor_id,
        stats=ShardStats(rows=2),
    )
    evolve(state, done)
    one = AssignWork(
        executors=tuple(
            ExecutorSlot(
                executor_id=s.executor_id,
                backends=s.backends,
                free_slots=int(s.executor_id == first.executor_id),
            )
            for s in slots(executors, 0)
        )
    )
    tick_s = median_s(lambda: decide(state, one, now=2.0), 50)
    return {"executors": executors, "placed": len(events), "fill_s": fill_s, "tick_s": tick_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipelines", default="100,1000,10000")
    args = parser.parse_args()
    sizes = [int(n) for n in args.pipelines.split(",")]
    print(f"placement in-process, {SHARDS} shards a pipeline; baseline: {sizes[0]:,} pipelines")
    base = None
    for n in sizes:
        r = measure(n)
        base = base or r
        print(
            f"  {n:>7,} pipelines, {r['executors']:>6,} executors: fill {r['placed']:,} slots"
            f" {r['fill_s'] * 1000:8.1f} ms ({r['fill_s'] / r['placed'] * 1e6:5.0f} us each);"
            f" a one-slot tick {r['tick_s'] * 1e6:8.0f} us = {r['tick_s'] / base['tick_s']:6.1f}x"
            " the baseline's"
        )


if __name__ == "__main__":
    main()
