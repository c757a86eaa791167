"""What the scheduler sends executors, and what executors advertise about themselves.

Neither is a domain event: a `WorkOrder` is derived from a `ShardAssigned` event (and can be sent
again from it at any time), an `ExecutorInfo` is a heartbeat in the INFERNO_EXECUTORS bucket.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import msgspec

from inferno.events.commands import (
    AssignWork,
    ExecutorSlot,
    Report,
    ShardFinished,
    ShardProgress,
    ShardsFinished,
)
from inferno.events.events import ShardAssigned, ShardsAssigned
from inferno.events.model import EvalSpec, PipelineSpec, RowOrder, segment_of, shard_bounds
from inferno.events.names import Names
from inferno.events.resources import SLOTS, Capacity, in_use
from inferno.events.scheduling import model_key
from inferno.events.state import Experiment, Pipeline, State


class WorkOrder(msgspec.Struct, kw_only=True, omit_defaults=True):
    v: int = 1
    experiment_id: str
    pipeline_id: int
    shard: int
    attempt: int
    executor_id: str
    dataset_ref: str
    row_start: int  # positions: with `row_order`, position p is row permuted(p)
    row_end: int
    row_offset: int = 0
    """Where the rows of `dataset_ref` begin among the experiment's (rows an extension added):
    results and `rows` use the experiment's row indices, offset + the dataset's own."""
    spec: PipelineSpec
    eval: EvalSpec = msgspec.field(default_factory=EvalSpec)
    row_count: int = 0  # the dataset's rows (0 in orders sent before rows were shuffled)
    segment: int = 0  # of the experiment's rows (`Segment`): its sequence terms say so
    row_order: RowOrder | None = None
    retries: int = 0  # of the pipeline so far: an executor aborts orders only of the run that ended
    rows: list[int] = []
    """A repair after a retry: just these rows (indices) of the completed shard, which the
    engine had failed on; their results go beside the shard's (`repair_results_name`)."""

    @property
    def msg_id(self) -> str:
        """One order per attempt: resending it after a scheduler failover stores nothing new."""
        return f"work-{self.pipeline_id}-{self.shard}-{self.attempt}"


class WorkBatch(msgspec.Struct, kw_only=True):
    """One work message: the orders of one `ShardsAssigned` (or of one `ShardAssigned`), acked
    once all of them have reported, their finished shards reported together
    (`ShardsFinished`)."""

    orders: list[WorkOrder]

    @property
    def msg_id(self) -> str:
        """The lone order's id; a batch's names its members, so sending it again (a new term
        regroups the shards in flight the same way) stores nothing new."""
        if len(self.orders) == 1:
            return self.orders[0].msg_id
        return f"work-{self.orders[0].executor_id}-{_digest(self.orders)}"


def _digest(orders: list[WorkOrder] | list[ShardFinished]) -> str:
    """The members, in any order: a new term regroups a batch from the state's dicts."""
    members = ",".join(sorted(f"{o.pipeline_id}.{o.shard}.{o.attempt}" for o in orders))
    return f"n{len(orders)}-{hashlib.sha256(members.encode()).hexdigest()[:16]}"


_work_decoder = msgspec.json.Decoder(WorkBatch)
_order_decoder = msgspec.json.Decoder(WorkOrder)


def decode_work(data: bytes) -> list[WorkOrder]:
    """A work message's orders: a `WorkBatch`, or a lone `WorkOrder` as tools send it."""
    try:
        return _work_decoder.decode(data).orders
    except msgspec.ValidationError:
        return [_order_decoder.decode(data)]


def assigned_batch(state: State, event: ShardAssigned | ShardsAssigned) -> WorkBatch:
    """The work message of an assignment event, from the state it was folded into."""
    orders = []
    for one in [event] if isinstance(event, ShardAssigned) else event.each():
        pipeline = state.pipelines[one.pipeline_id]
        experiment = state.experiments[pipeline.experiment_id]
        orders.append(work_order(experiment, pipeline, one.shard))
    return WorkBatch(orders=orders)


def in_flight_batches(state: State) -> list[WorkBatch]:
    """Every shard in flight as the work messages its assignments were sent as: one per
    executor and tick (`Assignment.assigned_at`), so a new term's re-send of a batch whose
    shards are all still in flight has the original's id."""
    ticks: dict[tuple[str, float], list[WorkOrder]] = {}
    for pipeline in state.pipelines.values():
        experiment = state.experiments[pipeline.experiment_id]
        for shard, assignment in pipeline.in_flight.items():
            key = (assignment.executor_id, assignment.assigned_at)
            ticks.setdefault(key, []).append(work_order(experiment, pipeline, shard))
    return [WorkBatch(orders=orders) for orders in ticks.values()]


def results_name(experiment_id: str, pipeline_id: int, shard: int) -> str:
    """A shard's per-row outputs and scores in INFERNO_RESULTS (JSONL, one row a line)."""
    return f"{experiment_id}/{pipeline_id}/{shard}.jsonl"


def repair_results_name(experiment_id: str, pipeline_id: int, shard: int, attempt: int) -> str:
    """A repair's results, when too large for its report: one object per attempt, so the
    shard's own results stay as they are."""
    return f"{experiment_id}/{pipeline_id}/{shard}.repair-{attempt}.jsonl"


def work_order(experiment: Experiment, pipeline: Pipeline, shard: int) -> WorkOrder:
    assignment = pipeline.in_flight[shard]
    index, rows = segment_of(experiment, shard)
    start, end = shard_bounds(rows.row_count, rows.num_shards, shard - rows.first_shard)
    return WorkOrder(
        experiment_id=experiment.experiment_id,
        pipeline_id=pipeline.pipeline_id,
        shard=shard,
        attempt=assignment.attempt,
        executor_id=assignment.executor_id,
        dataset_ref=rows.dataset_ref,
        row_start=start,
        row_end=end,
        row_offset=rows.first_row,
        spec=pipeline.spec,
        eval=experiment.eval,
        row_count=rows.row_count,
        segment=index,
        row_order=rows.row_order,
        retries=pipeline.retries,
        rows=pipeline.errored[shard] if shard in pipeline.repair else [],
    )


class ExecutorInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    """An executor's heartbeat: capabilities and current load, refreshed well inside the TTL.

    `queue` is how many orders it holds beyond its slots: they wait in its WORK consumer and
    start the moment a slot frees, so no slot waits a decision cycle for its next shard. The
    scheduler fills queues only after slots (`queue_capacity`).
    """

    v: int = 1
    executor_id: str
    backends: list[str]
    slots: int
    queue: int = 0
    busy: int = 0
    loaded_models: list[str] = []
    has_gpu: bool = False  # a GPU detected, or `gpus` declared
    gpus: list[dict[str, object]] = []
    hostname: str = ""
    pid: int = 0
    started_at: float = 0.0
    heartbeat_at: float = 0.0
    resources: dict[str, float] = {}  # declared (INFERNO_EXECUTOR_RESOURCES) or detected

    def capacity(self) -> Capacity:
        return Capacity(
            executor_id=self.executor_id,
            backends=frozenset(self.backends),
            has_gpu=self.has_gpu,
            resources=self.resources,
        )

    def slot(self, used: Mapping[str, float]) -> ExecutorSlot:
        """Capacity as the scheduler counts it: what its own assignments take (`in_use`), not
        the heartbeat's `busy`, which lags by up to one heartbeat."""
        return ExecutorSlot(
            executor_id=self.executor_id,
            backends=frozenset(self.backends),
            free_slots=max(self.slots - int(used.get(SLOTS, 0)), 0),
            loaded_models=frozenset(self.loaded_models),
            has_gpu=self.has_gpu,
            free={k: max(v - used.get(k, 0.0), 0.0) for k, v in self.resources.items()},
        )


def queue_capacity(
    state: State,
    offered: AssignWork,
    executors: Mapping[str, ExecutorInfo],
    *,
    deep: bool = False,
) -> AssignWork:
    """A tick's queue passes: the executors offered in `offered` again, with room for their
    slots plus their queues less what the state has assigned them (after the passes before),
    each for the models it has loaded or in flight only. An executor runs one model at a time,
    so a queued shard of another model would wait for a swap that another executor may not need.
    Queued shards hold their resources as running ones do, so a queue never overcommits.

    The first pass fills up to one queued order a slot; `deep`, the second, the rest of a queue
    that an executor deepened for short shards (`inferno.executor.queue_depth`), with shards of
    the model its heartbeat says is loaded only: the shards it timed, where a model it has not
    run may have shards of minutes."""
    used = in_use(state.pipelines.values())  # again each pass: the one before assigned more
    models: dict[str, set[str]] = {}  # in flight per executor: the deep pass takes none of them
    for pipeline in () if deep else state.pipelines.values():
        for assignment in pipeline.in_flight.values():
            models.setdefault(assignment.executor_id, set()).add(model_key(pipeline))
    slots = []
    for slot in offered.executors:
        info = executors.get(slot.executor_id)
        if info is None or info.queue <= 0:
            continue
        queue = info.queue if deep else min(info.queue, info.slots)
        only = (
            slot.loaded_models if deep else slot.loaded_models | models.get(info.executor_id, set())
        )
        if deep and (queue <= info.slots or not only):
            continue
        mine = used.get(slot.executor_id, {})
        room = max(info.slots + queue - int(mine.get(SLOTS, 0)), 0)
        fresh = info.slot(mine)  # resources as the passes before left them
        slots.append(msgspec.structs.replace(fresh, free_slots=room, only_models=only))
    return AssignWork(executors=tuple(slots))


executor_info_decoder = msgspec.json.Decoder(ExecutorInfo)


def report_subject(names: Names, report: Report | ShardsFinished) -> str:
    return names.exec_report(report.executor_id, report.__struct_config__.tag)  # type: ignore[arg-type]


def report_msg_id(report: Report | ShardsFinished) -> str:
    """Deterministic, so an executor that re-sends a report after a reconnect stores it once."""
    if isinstance(report, ShardsFinished):
        digest = _digest(report.reports)
        return f"{report.executor_id}-{digest}-{report.__struct_config__.tag}"
    base = f"{report.executor_id}-{report.pipeline_id}-{report.shard}-{report.attempt}"
    rows = f"-{report.rows_done}" if isinstance(report, ShardProgress) else ""
    return f"{base}-{report.__struct_config__.tag}{rows}"
