"""Which shard goes to which executor next (DESIGN §4), as a pure function of state and capacity.

Rules, in order:
1. Lockstep fairness: a pipeline with nothing in flight goes before one with work in flight, and
   among those the one with the fewest completed shards (ties: lowest id). So every configuration
   advances together and early metrics compare like with like; a second shard of a pipeline is
   handed out only when executors would otherwise sit idle.
2. Model affinity: among executors that can run the pipeline, prefer one that has (or is about
   to have) its model loaded — a swap costs minutes on a GPU. Then the one with most free slots.
3. Admission control: never more shards than an executor's free slots, only to executors that
   advertise the pipeline's backend, a GPU pipeline only where there is a GPU, and never more
   than an executor declares of any resource a pipeline needs (`inferno.events.resources`): the
   needs of its shards in flight, summed per key, stay within what it declares.
4. Budgets: a shard is placed only if its reservation fits every budget over it beside what is
   spent and held already (`inferno.events.ledger`).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import NamedTuple

from inferno.events.commands import ExecutorSlot
from inferno.events.ledger import Ledger
from inferno.events.resources import fits, needs, needs_gpu
from inferno.events.state import Pipeline, State


class Placement(NamedTuple):
    pipeline_id: int
    shard: int
    attempt: int
    executor_id: str


class Demand(NamedTuple):
    """What each shard of a pipeline takes beside its slot, and whether it needs a GPU."""

    resources: dict[str, float]
    gpu: bool


def model_key(pipeline: Pipeline) -> str:
    """What an executor must have loaded to run this pipeline without a swap."""
    model = pipeline.spec.model_config.get("model", "")
    return f"{pipeline.spec.pipeline_type}:{model}"


def next_shard(
    pipeline: Pipeline, now: float, skip: frozenset[int] | set[int] = frozenset()
) -> int | None:
    """The first shard not completed (or completed and to be repaired), not in flight, and past
    its retry time."""
    done, busy, retry_at = pipeline.completed, pipeline.in_flight, pipeline.retry_at
    repair = pipeline.repair
    for shard in range(pipeline.num_shards):
        if (shard in done and shard not in repair) or shard in busy or shard in skip:
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
    spare = {e.executor_id: dict(e.free) for e in executors}
    candidates = [p for p in state.pipelines.values() if p.runnable]
    demand = {p.pipeline_id: Demand(needs(p.spec), needs_gpu(p.spec)) for p in candidates}
    # the lockstep order as a heap keyed (in flight, completed, id): a placement re-keys only
    # its own pipeline, so each costs O(log pipelines) instead of a sort of all of them
    queue = [(len(p.in_flight), len(p.completed), p.pipeline_id, p) for p in candidates]
    heapq.heapify(queue)
    planned: dict[int, set[int]] = {}
    placements: list[Placement] = []
    ledger = Ledger(state)  # answers at once for a pipeline no budget is over

    while free and queue:
        in_flight, completed, pipeline_id, pipeline = heapq.heappop(queue)
        # a pipeline with no shard or no able executor left is dropped: planning only takes
        # shards, slots and resources, so it could not be placed later in this plan either
        shard = next_shard(pipeline, now, planned.setdefault(pipeline_id, set()))
        if shard is None or ledger.blocked(pipeline, shard):
            continue
        wants = demand[pipeline_id]
        executor_id = _pick_executor(pipeline, wants, free, spare, by_id, loaded)
        if executor_id is None:
            continue
        attempt = pipeline.attempts.get(shard, 0) + 1
        placements.append(Placement(pipeline_id, shard, attempt, executor_id))
        ledger.reserve(pipeline, shard)
        planned[pipeline_id].add(shard)
        heapq.heappush(queue, (in_flight + 1, completed, pipeline_id, pipeline))
        loaded[executor_id].add(model_key(pipeline))
        for key, amount in wants.resources.items():
            spare[executor_id][key] -= amount
        free[executor_id] -= 1
        if free[executor_id] == 0:
            del free[executor_id]
    return placements


def _may_host(executor: ExecutorSlot, key: str) -> bool:
    return executor.only_models is None or key in executor.only_models


def _pick_executor(
    pipeline: Pipeline,
    wants: Demand,
    free: dict[str, int],
    spare: dict[str, dict[str, float]],
    by_id: dict[str, ExecutorSlot],
    loaded: dict[str, set[str]],
) -> str | None:
    kind = pipeline.spec.pipeline_type
    key = model_key(pipeline)
    able = [
        eid
        for eid in free
        if kind in by_id[eid].backends
        and _may_host(by_id[eid], key)
        and (by_id[eid].has_gpu or not wants.gpu)
        and fits(wants.resources, spare[eid])
    ]
    if not able:
        return None
    return min(able, key=lambda eid: (key not in loaded[eid], -free[eid], eid))
