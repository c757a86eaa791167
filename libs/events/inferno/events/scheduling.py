"""Which shard goes to which executor next (DESIGN §4), as a pure function of state and capacity.

Rules, in order:
1. Lockstep fairness: a pipeline with nothing in flight goes before one with work in flight, and
   among those the one with the fewest completed shards (ties: lowest id). So every configuration
   advances together and early metrics compare like with like; a second shard of a pipeline is
   handed out only when executors would otherwise sit idle.
2. Model affinity: among executors that can run the pipeline, prefer one that has (or is about
   to have) its model loaded — a swap costs minutes on a GPU. Then the one with most free slots.
3. Admission control: never more shards than an executor's free slots, and only to executors that
   advertise the pipeline's backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from inferno.events.commands import ExecutorSlot
from inferno.events.state import Pipeline, State


class Placement(NamedTuple):
    pipeline_id: int
    shard: int
    attempt: int
    executor_id: str


def model_key(pipeline: Pipeline) -> str:
    """What an executor must have loaded to run this pipeline without a swap."""
    model = pipeline.spec.model_config.get("model", "")
    return f"{pipeline.spec.pipeline_type}:{model}"


def next_shard(
    pipeline: Pipeline, now: float, skip: frozenset[int] | set[int] = frozenset()
) -> int | None:
    """The first shard not completed, not in flight, and past its retry time."""
    done, busy, retry_at = pipeline.completed, pipeline.in_flight, pipeline.retry_at
    for shard in range(pipeline.num_shards):
        if shard in done or shard in busy or shard in skip:
            continue
        if retry_at.get(shard, 0.0) <= now:
            return shard
    return None


def plan_assignments(
    state: State, executors: Sequence[ExecutorSlot], now: float
) -> list[Placement]:
    free = {e.executor_id: e.free_slots for e in executors if e.free_slots > 0}
    if not free:
        return []
    loaded = {e.executor_id: set(e.loaded_models) for e in executors}
    by_id = {e.executor_id: e for e in executors}
    candidates = [p for p in state.pipelines.values() if p.runnable]
    in_flight = {p.pipeline_id: len(p.in_flight) for p in candidates}
    planned: dict[int, set[int]] = {p.pipeline_id: set() for p in candidates}
    placements: list[Placement] = []

    while free and candidates:
        candidates.sort(key=lambda p: (in_flight[p.pipeline_id], len(p.completed), p.pipeline_id))
        for pipeline in candidates:
            shard = next_shard(pipeline, now, planned[pipeline.pipeline_id])
            if shard is None:
                continue
            executor_id = _pick_executor(pipeline, free, by_id, loaded)
            if executor_id is None:
                continue
            placements.append(
                Placement(
                    pipeline.pipeline_id,
                    shard,
                    pipeline.attempts.get(shard, 0) + 1,
                    executor_id,
                )
            )
            planned[pipeline.pipeline_id].add(shard)
            in_flight[pipeline.pipeline_id] += 1
            loaded[executor_id].add(model_key(pipeline))
            free[executor_id] -= 1
            if free[executor_id] == 0:
                del free[executor_id]
            break
        else:
            break
    return placements


def _may_host(executor: ExecutorSlot, key: str) -> bool:
    return executor.only_models is None or key in executor.only_models


def _pick_executor(
    pipeline: Pipeline,
    free: dict[str, int],
    by_id: dict[str, ExecutorSlot],
    loaded: dict[str, set[str]],
) -> str | None:
    kind = pipeline.spec.pipeline_type
    key = model_key(pipeline)
    able = [eid for eid in free if kind in by_id[eid].backends and _may_host(by_id[eid], key)]
    if not able:
        return None
    return min(able, key=lambda eid: (key not in loaded[eid], -free[eid], eid))
