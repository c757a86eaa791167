"""The scheduler service against a real nats-server: decisions, failover, lapses, fencing.

Executors are played by the test over the real log protocol (`FakeExecutor`): a heartbeat in the
EXECUTORS bucket, work orders pulled from WORK with the executor's durable, reports published to
EXEC with their deterministic msg ids. Commands are appended to CMD exactly as the api does.
Every test ends by checking what the issue's acceptance asks of any run: each (pipeline, shard)
completed exactly once, and replaying EVT from sequence 1 gives the leader's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import nats.errors
import pytest
from nats.aio.msg import Msg
from nats.errors import MsgAlreadyAckdError
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError

from inferno.events import State, decode_event, encode, evolve, snapshot
from inferno.events.batches import expanded
from inferno.events.commands import (
    AnyCommand,
    CloneIntoContext,
    ClonePipeline,
    CreateExperiment,
    DeletePipeline,
    ResumePipeline,
    ShardFinished,
    StopPipeline,
)
from inferno.events.events import (
    AnyEvent,
    PipelineCreated,
    PipelineResumed,
    PipelineStopped,
    ShardAssigned,
    ShardCompleted,
    ShardReleased,
)
from inferno.events.model import PipelineChanges, PipelineSpec, ShardStats
from inferno.events.names import Names
from inferno.events.work import (
    ExecutorInfo,
    WorkOrder,
    decode_work,
    report_msg_id,
    report_subject,
)
from inferno.jetstream import (
    Appender,
    Outgoing,
    StaleWriter,
    durable_pull,
    ensure_log,
    replay,
)
from inferno.readmodels import ReadModel, apply_event
from inferno.runtime.settings import Settings
from inferno.runtime.tasks import cancel_and_wait
from inferno.scheduler.service import Status, run
from tests.waiting import until

HEARTBEAT_TTL = 2.0
LEASE_TTL = 1.0


# the log, schedulers and executors


@pytest.fixture
def settings(nats_url: str, namespace: str) -> Settings:
    return Settings(
        nats_url=nats_url,
        namespace=namespace,
        heartbeat_ttl_s=HEARTBEAT_TTL,
        lease_ttl_s=LEASE_TTL,
    )


@pytest.fixture
async def log(js: JetStreamContext, names: Names) -> JetStreamContext:
    """The log as any service creates it at start (the api usually comes first)."""
    await ensure_log(js, names, heartbeat_ttl_s=HEARTBEAT_TTL, lease_ttl_s=LEASE_TTL)
    return js


@dataclass
class Running:
    scheduler_id: str
    task: asyncio.Task[None]
    stop: asyncio.Event
    status: Status


@dataclass
class Schedulers:
    settings: Settings
    running: list[Running] = field(default_factory=list)

    def start(self, scheduler_id: str, **overrides: Any) -> Running:
        stop, status = asyncio.Event(), Status()
        task = asyncio.create_task(
            run(
                self.settings,
                scheduler_id=scheduler_id,
                stop=stop,
                status=status,
                tick_interval=0.02,
                **overrides,
            )
        )
        self.running.append(Running(scheduler_id, task, stop, status))
        return self.running[-1]

    async def leader(self, scheduler: Running, timeout: float = 5.0) -> None:
        await eventually(lambda: _leading(scheduler), timeout=timeout, what="leadership")

    @staticmethod
    async def stop(scheduler: Running) -> None:
        """A clean shutdown (SIGTERM): finish the batch, release the lease, drain."""
        scheduler.stop.set()
        await asyncio.wait_for(scheduler.task, 10)

    @staticmethod
    async def crash(scheduler: Running) -> None:
        """Like kill -9: nothing is released; the lease has to expire."""
        await cancel_and_wait(scheduler.task)

    async def close(self) -> None:
        for scheduler in self.running:
            if not scheduler.task.done():
                await self.crash(scheduler)
            elif not scheduler.task.cancelled():
                scheduler.task.result()  # surface a scheduler that died of an error


async def _leading(scheduler: Running) -> bool:
    if scheduler.task.done():
        scheduler.task.result()
    return scheduler.status.leading and scheduler.status.state is not None


@pytest.fixture
async def schedulers(js: JetStreamContext, settings: Settings) -> AsyncIterator[Schedulers]:
    """Torn down before `js` deletes the namespace."""
    group = Schedulers(settings)
    yield group
    await group.close()


class FakeExecutor:
    """An executor as the log sees it; `auto` finishes each order at once, otherwise the test
    holds orders and finishes them when it wants (`finish_held`)."""

    def __init__(
        self,
        js: JetStreamContext,
        names: Names,
        executor_id: str,
        *,
        slots: int = 2,
        queue: int = 0,
    ):
        self.js, self.names, self.executor_id, self.slots = js, names, executor_id, slots
        self.queue = queue
        self.auto = False
        self.orders: list[WorkOrder] = []
        self.held: list[tuple[WorkOrder, Msg]] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, *, auto: bool) -> FakeExecutor:
        self.auto = auto
        self.kv = await self.js.key_value(self.names.executors_bucket)
        await self.heartbeat()
        self.sub = await durable_pull(
            self.js,
            self.names.work_stream,
            f"executor-{self.executor_id}",
            filter_subject=self.names.work(self.executor_id),
            ack_wait=30,
            max_deliver=-1,
        )
        self._tasks = [asyncio.create_task(self._beat()), asyncio.create_task(self._pull())]
        return self

    async def heartbeat(self) -> None:
        info = ExecutorInfo(
            executor_id=self.executor_id,
            backends=["sim"],
            slots=self.slots,
            queue=self.queue,
            heartbeat_at=time.time(),
        )
        await self.kv.put(self.executor_id, encode(info))

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_TTL / 8)
            await self.heartbeat()

    async def _pull(self) -> None:
        while True:
            try:
                messages = await self.sub.fetch(64, timeout=0.05)
            except TimeoutError:  # nats-py raises its own or asyncio's
                continue
            for msg in messages:
                for order in decode_work(msg.data):
                    assert (
                        msg.subject
                        == self.names.work(self.executor_id)
                        == self.names.work(order.executor_id)
                    )
                    self.orders.append(order)
                    if self.auto:
                        await self.report(order)
                        await _ack(msg)
                    else:
                        self.held.append((order, msg))

    async def report(self, order: WorkOrder) -> None:
        finished = ShardFinished(
            executor_id=self.executor_id,
            pipeline_id=order.pipeline_id,
            shard=order.shard,
            attempt=order.attempt,
            at=time.time(),
            stats=ShardStats(rows=order.row_end - order.row_start),
        )
        await self.js.publish(
            report_subject(self.names, finished),
            encode(finished),
            stream=self.names.exec_stream,
            headers={"Nats-Msg-Id": report_msg_id(finished)},
        )

    async def finish_held(self) -> None:
        held, self.held = self.held, []
        for order, msg in held:
            await self.report(order)
            await _ack(msg)

    async def go_auto(self) -> None:
        self.auto = True
        await self.finish_held()

    async def vanish(self) -> None:
        """The host dies: no more heartbeats or reports, and its key is gone."""
        await self.close()
        await self.kv.delete(self.executor_id)

    async def close(self) -> None:
        for task in self._tasks:
            await cancel_and_wait(task)
        self._tasks = []


@pytest.fixture
async def executors(log: JetStreamContext, names: Names) -> AsyncIterator[Callable[..., Any]]:
    started: list[FakeExecutor] = []

    async def start(
        executor_id: str, *, auto: bool, slots: int = 2, queue: int = 0
    ) -> FakeExecutor:
        executor = FakeExecutor(log, names, executor_id, slots=slots, queue=queue)
        await executor.start(auto=auto)
        started.append(executor)
        return executor

    yield start
    for executor in started:
        await executor.close()


# commands and the log

_ACTIONS = {
    StopPipeline: "stop",
    ResumePipeline: "resume",
    DeletePipeline: "delete",
    ClonePipeline: "clone",
}


async def command(js: JetStreamContext, names: Names, cmd: AnyCommand) -> int:
    """Append a command as the api does; its sequence is the ic_id."""
    if isinstance(cmd, CreateExperiment):
        subject = names.experiment_cmd(cmd.experiment_id, "create")
    elif isinstance(cmd, CloneIntoContext):
        subject = names.context_cmd(cmd.context_id, "clone")
    else:
        subject = names.pipeline_cmd(cmd.pipeline_id, _ACTIONS[type(cmd)])  # type: ignore[union-attr]
    ack = await js.publish(
        subject, encode(cmd), stream=names.cmd_stream, headers={"Nats-Msg-Id": uuid.uuid4().hex}
    )
    return ack.seq


def experiment(pipelines: int = 2, num_shards: int = 4) -> CreateExperiment:
    return CreateExperiment(
        experiment_id="exp1",
        context_id="ctx1",
        experiment_name="arith",
        dataset_ref="sha256-" + "0" * 64,
        row_count=num_shards * 3,
        num_shards=num_shards,
        pipelines=[
            PipelineSpec(
                pipeline_name=f"p{i}", pipeline_type="sim", model_config={"model": f"sim-{i}"}
            )
            for i in range(1, pipelines + 1)
        ],
        retry_backoff_s=0.05,
        issued_at=time.time(),
    )


@dataclass
class Log:
    state: State  # what the scheduler decides on
    model: ReadModel  # what readers see: operations and the rest
    events: list[AnyEvent]

    def of(self, kind: type, **match: Any) -> list[Any]:
        return [
            e
            for e in self.events
            if isinstance(e, kind) and all(getattr(e, k) == v for k, v in match.items())
        ]


async def evt(js: JetStreamContext, names: Names) -> Log:
    """EVT folded from sequence 1, as any service rebuilds it."""
    state, model, events = State(), ReadModel(), []

    def apply(data: bytes, seq: int) -> None:
        event = decode_event(data)
        events.extend(expanded(event))  # one event per shard, as tests look for them
        evolve(state, event)
        apply_event(model, seq, event)

    await replay(js, names.evt_stream, apply)
    return Log(state, model, events)


async def eventually(
    check: Callable[[], Awaitable[Any]], *, timeout: float = 30.0, what: str = "condition"
) -> Any:
    return await until(check, what, timeout, interval=0.03)


async def until_log(
    js: JetStreamContext, names: Names, check: Callable[[Log], Any], *, timeout: float = 30.0
) -> Log:
    async def look() -> Log | None:
        log = await evt(js, names)
        return log if check(log) else None

    return await eventually(look, timeout=timeout, what="the log")


def op_done(ic_id: int) -> Callable[[Log], bool]:
    def check(log: Log) -> bool:
        op = log.model.operations.get(ic_id)
        return op is not None and op.status in ("completed", "failed")

    return check


def experiment_completed(log: Log) -> bool:
    exp = log.state.experiments.get("exp1")
    return exp is not None and exp.status == "completed"


def assert_each_shard_completed_once(log: Log) -> None:
    completed = Counter((e.pipeline_id, e.shard) for e in log.of(ShardCompleted))
    assert all(n == 1 for n in completed.values()), completed
    for pipeline in log.state.pipelines.values():
        done = {shard for pid, shard in completed if pid == pipeline.pipeline_id}
        assert done == pipeline.completed
        if pipeline.status == "completed":
            assert done == set(range(pipeline.num_shards))


async def assert_replay_is_the_leaders_state(
    js: JetStreamContext, names: Names, leader: Running
) -> None:
    assert leader.status.state is not None
    log = await evt(js, names)
    assert snapshot(log.state) == snapshot(leader.status.state)
    assert leader.status.evt_last_seq == (await js.stream_info(names.evt_stream)).state.last_seq


async def writers(js: JetStreamContext, names: Names) -> list[str]:
    """The scheduler that appended each EVT message, in order (the `Inferno-Scheduler` header)."""
    last = (await js.stream_info(names.evt_stream)).state.last_seq
    out = []
    for seq in range(1, last + 1):
        msg = await js.get_msg(names.evt_stream, seq)
        out.append((msg.headers or {}).get("Inferno-Scheduler", "?"))
    return out


# tests


async def test_an_experiment_runs_to_completion_across_executors(log, names, schedulers, executors):
    e1 = await executors("e1", auto=True)
    e2 = await executors("e2", auto=True)
    leader = schedulers.start("s1")
    await schedulers.leader(leader)

    ic_id = await command(log, names, experiment(pipelines=2, num_shards=4))
    final = await until_log(log, names, experiment_completed)

    op = final.model.operations[ic_id]
    assert (op.status, op.result["pipeline_ids"]) == ("completed", [1, 2])
    assert {p.status for p in final.state.pipelines.values()} == {"completed"}
    assigned = {(e.pipeline_id, e.shard) for e in final.of(ShardAssigned)}
    assert assigned == {(p, s) for p in (1, 2) for s in range(4)}
    received = {(o.pipeline_id, o.shard, o.executor_id) for o in e1.orders + e2.orders}
    assert received == {(e.pipeline_id, e.shard, e.executor_id) for e in final.of(ShardAssigned)}
    assert {o.executor_id for o in e1.orders + e2.orders} == {"e1", "e2"}
    assert_each_shard_completed_once(final)

    await schedulers.stop(leader)
    await assert_replay_is_the_leaders_state(log, names, leader)
    assert set(await writers(log, names)) == {"s1"}


async def test_stop_resume_clone_delete_and_invalid_commands(log, names, schedulers, executors):
    e1 = await executors("e1", auto=False, slots=2)
    leader = schedulers.start("s1")
    await schedulers.leader(leader)
    await command(log, names, experiment(pipelines=2, num_shards=3))
    await eventually(lambda: _held(e1, 2), what="one shard of each pipeline")

    stop = await command(log, names, StopPipeline(pipeline_id=1))
    after_stop = await until_log(log, names, op_done(stop))
    assert after_stop.model.operations[stop].status == "completed"
    assert after_stop.state.pipelines[1].status == "stopped"
    await e1.finish_held()  # the stopped pipeline's in-flight shard finishes and counts
    await eventually(lambda: _held(e1, 2), what="pipeline 2's next shards")
    assert {(o.pipeline_id, o.shard) for o, _ in e1.held} == {(2, 1), (2, 2)}

    bad = await command(log, names, ResumePipeline(pipeline_id=2))
    clone = await command(
        log,
        names,
        ClonePipeline(pipeline_id=1, changes=PipelineChanges(sampling_params={"top_p": 0.5})),
    )
    after = await until_log(log, names, op_done(clone))
    assert after.model.operations[bad].status == "failed"
    assert "only stopped pipelines can be resumed" in (after.model.operations[bad].error or "")
    assert after.model.operations[clone].result == {"pipeline_id": 3}
    (created,) = after.of(PipelineCreated, pipeline_id=3)
    assert (created.parent_pipeline_id, created.source) == (1, "clone")
    assert created.spec.sampling_params == {"top_p": 0.5}

    delete = await command(log, names, DeletePipeline(pipeline_id=3))
    resume = await command(log, names, ResumePipeline(pipeline_id=1))
    spec = PipelineSpec(pipeline_name="fresh", pipeline_type="sim", model_config={"model": "m"})
    into = await command(log, names, CloneIntoContext(context_id="ctx1", spec=spec))
    await e1.go_auto()
    final = await until_log(log, names, experiment_completed)
    assert final.model.operations[delete].status == "completed"
    assert final.model.operations[resume].status == "completed"
    assert final.model.operations[into].result == {"pipeline_id": 4}
    (fresh,) = final.of(PipelineCreated, pipeline_id=4)
    assert (fresh.parent_pipeline_id, fresh.source, fresh.spec) == (None, "clone", spec)
    statuses = {pid: p.status for pid, p in final.state.pipelines.items()}
    assert statuses == {1: "completed", 2: "completed", 3: "deleted", 4: "completed"}
    stopped_at = final.events.index(final.of(PipelineStopped, pipeline_id=1)[0])
    resumed_at = final.events.index(final.of(PipelineResumed, pipeline_id=1)[0])
    p1_assigned = [
        (i, e.shard)
        for i, e in enumerate(final.events)
        if isinstance(e, ShardAssigned) and e.pipeline_id == 1
    ]
    assert not [shard for i, shard in p1_assigned if stopped_at < i < resumed_at]
    # resumed at the first incomplete shard
    assert [shard for i, shard in p1_assigned if i > resumed_at] == [1, 2]
    assert_each_shard_completed_once(final)

    await schedulers.stop(leader)
    await assert_replay_is_the_leaders_state(log, names, leader)


async def _ack(msg: Msg) -> None:
    """Once per work message, which may hold several orders."""
    with contextlib.suppress(MsgAlreadyAckdError):
        await msg.ack()


async def _held(executor: FakeExecutor, n: int) -> bool:
    return len(executor.held) == n


async def test_the_standby_takes_over_when_the_leader_crashes(log, names, schedulers, executors):
    e1 = await executors("e1", auto=False)
    e2 = await executors("e2", auto=False)
    first = schedulers.start("s-a")
    await schedulers.leader(first)
    second = schedulers.start("s-b")
    await command(log, names, experiment(pipelines=2, num_shards=4))
    await eventually(lambda: _held_total([e1, e2], 4), what="four shards in flight")
    assert not second.status.leading
    assert second.status.events_appended == 0

    await schedulers.crash(first)
    await schedulers.leader(second, timeout=LEASE_TTL + 10)  # once the crashed lease lapses
    before = (await evt_info(log, names)).state.last_seq

    for executor in (e1, e2):
        await executor.go_auto()  # reports of work the crashed leader assigned
    final = await until_log(log, names, experiment_completed)
    assert_each_shard_completed_once(final)
    who = await writers(log, names)
    assert set(who[:before]) == {"s-a"}
    assert set(who[before:]) == {"s-b"}

    await schedulers.stop(second)
    await assert_replay_is_the_leaders_state(log, names, second)


async def evt_info(js: JetStreamContext, names: Names) -> Any:
    return await js.stream_info(names.evt_stream)


async def _held_total(group: list[FakeExecutor], n: int) -> bool:
    return sum(len(e.held) for e in group) == n


async def test_a_new_leader_resends_orders_a_crashed_leader_never_sent(
    log, nc, names, schedulers, executors
):
    first = schedulers.start("s-a")
    await schedulers.leader(first)
    ic_id = await command(log, names, experiment(pipelines=1, num_shards=2))
    await until_log(log, names, op_done(ic_id))
    await schedulers.stop(first)
    # the leader appended this assignment and died before publishing the order
    last = (await evt_info(log, names)).state.last_seq
    lost = ShardAssigned(at=time.time(), pipeline_id=1, shard=0, attempt=1, executor_id="e9")
    await Appender(nc).append(
        names.evt_stream,
        [Outgoing(names.shard_evt(1, 0, "assigned"), encode(lost), "lost-order")],
        expected_last_seq=last,
    )

    e9 = await executors("e9", auto=False, slots=1)
    second = schedulers.start("s-b")
    await eventually(lambda: _held(e9, 1), what="the re-sent order")
    (order, _msg) = e9.held[0]
    assert (order.pipeline_id, order.shard, order.attempt) == (1, 0, 1)
    await e9.go_auto()
    final = await until_log(log, names, experiment_completed)
    assert_each_shard_completed_once(final)
    assert [e.attempt for e in final.of(ShardAssigned, shard=0)] == [1]

    await schedulers.stop(second)
    await assert_replay_is_the_leaders_state(log, names, second)


async def test_a_vanished_executors_shards_go_to_another_with_a_new_attempt(
    log, names, schedulers, executors
):
    e1 = await executors("e1", auto=False)
    e2 = await executors("e2", auto=False)
    leader = schedulers.start("s1")
    await schedulers.leader(leader)
    await command(log, names, experiment(pipelines=1, num_shards=4))
    await eventually(lambda: _held_total([e1, e2], 4), what="four shards in flight")
    lost = sorted(o.shard for o, _ in e1.held)
    assert lost

    await e1.vanish()
    await e2.finish_held()  # frees e2's slots for the released shards
    released = await until_log(
        log, names, lambda g: len(g.of(ShardReleased)) == len(lost), timeout=HEARTBEAT_TTL + 3
    )
    assert all("e1 heartbeat lapsed" in e.reason for e in released.of(ShardReleased))
    await e2.go_auto()
    final = await until_log(log, names, experiment_completed)
    for shard in lost:
        assert [(e.attempt, e.executor_id) for e in final.of(ShardAssigned, shard=shard)] == [
            (1, "e1"),
            (2, "e2"),
        ]
        (completed,) = final.of(ShardCompleted, shard=shard)
        assert (completed.attempt, completed.executor_id) == (2, "e2")

    # e1 comes back and reports its old attempts: too late, nothing changes
    last = (await evt_info(log, names)).state.last_seq
    for order, _msg in e1.held:
        await e1.report(order)
    await asyncio.sleep(0.3)
    assert (await evt_info(log, names)).state.last_seq == last
    assert_each_shard_completed_once(final)

    await schedulers.stop(leader)
    await assert_replay_is_the_leaders_state(log, names, leader)


async def test_queues_fill_after_every_slot_and_a_vanished_executor_releases_them_too(
    log, names, schedulers, executors
):
    e1 = await executors("e1", auto=False, slots=1, queue=1)
    e2 = await executors("e2", auto=False, slots=1, queue=1)
    leader = schedulers.start("s1")
    await schedulers.leader(leader)
    await command(log, names, experiment(pipelines=1, num_shards=6))
    held = await until_log(log, names, lambda g: len(g.of(ShardAssigned)) == 4)
    ticked = leader.status.ticks + 5  # five more assignment passes: nothing beyond slots + queue

    async def five_more_ticks() -> bool:
        return leader.status.ticks >= ticked

    await eventually(five_more_ticks, what="five more ticks")
    assert len((await evt(log, names)).of(ShardAssigned)) == 4
    # a slot and a queued order each (one work message each: both passes of the tick)
    assert Counter(e.executor_id for e in held.of(ShardAssigned)) == {"e1": 2, "e2": 2}
    await eventually(lambda: _held_total([e1, e2], 4), what="four orders held")

    lost = sorted(o.shard for o, _ in e1.held)
    await e1.vanish()
    released = await until_log(
        log, names, lambda g: len(g.of(ShardReleased)) == 2, timeout=HEARTBEAT_TTL + 30
    )
    assert sorted(e.shard for e in released.of(ShardReleased)) == lost
    await e2.go_auto()
    final = await until_log(log, names, experiment_completed)
    for shard in lost:
        (completed,) = final.of(ShardCompleted, shard=shard)
        assert (completed.attempt, completed.executor_id) == (2, "e2")
    assert_each_shard_completed_once(final)

    await schedulers.stop(leader)
    await assert_replay_is_the_leaders_state(log, names, leader)


async def test_a_leader_fenced_off_by_another_writer_rebuilds_and_continues(
    log, nc, names, schedulers, executors
):
    e1 = await executors("e1", auto=False, slots=2)
    leader = schedulers.start("s1")
    await schedulers.leader(leader)
    await command(log, names, experiment(pipelines=2, num_shards=2))
    await eventually(lambda: _held(e1, 2), what="one shard of each pipeline")

    # another writer appends behind the leader's back; its decision must be honoured
    rogue = PipelineStopped(at=time.time(), pipeline_id=2)
    for _ in range(10):
        last = (await evt_info(log, names)).state.last_seq
        with contextlib.suppress(StaleWriter):
            await Appender(nc).append(
                names.evt_stream,
                [Outgoing(names.pipeline_evt(2, "stopped"), encode(rogue), "rogue-1")],
                expected_last_seq=last,
            )
            break

    await e1.finish_held()  # the leader's next append is fenced off
    await eventually(lambda: _stale(leader), what="the rebuild")
    await eventually(lambda: _held(e1, 1), what="pipeline 1's next shard")
    assert [(o.pipeline_id, o.shard) for o, _ in e1.held] == [(1, 1)]

    resume = await command(log, names, ResumePipeline(pipeline_id=2))
    await e1.go_auto()
    final = await until_log(log, names, experiment_completed)
    assert final.model.operations[resume].status == "completed"
    assert_each_shard_completed_once(final)
    assert leader.status.stale_rebuilds == 1
    assert "?" in await writers(log, names)  # the rogue append is there, unsigned

    await schedulers.stop(leader)
    await assert_replay_is_the_leaders_state(log, names, leader)


async def _stale(scheduler: Running) -> bool:
    return scheduler.status.stale_rebuilds == 1 and scheduler.status.leading


async def test_a_clean_shutdown_hands_the_lease_over_at_once(js, names, settings, schedulers):
    ttl = 30.0  # long, so that a takeover by expiry could not pass as a handover
    first = schedulers.start("s-a", lease_ttl_s=ttl)
    await schedulers.leader(first)
    second = schedulers.start("s-b", lease_ttl_s=ttl)
    await asyncio.sleep(0.2)
    assert not second.status.leading

    stopped_at = time.monotonic()
    await schedulers.stop(first)
    await schedulers.leader(second, timeout=ttl)
    assert time.monotonic() - stopped_at < ttl / 2
    kv = await js.key_value(names.leader_bucket)
    holder = json.loads((await kv.get("scheduler")).value)
    assert (holder["scheduler_id"], holder["term"]) == ("s-b", second.status.term)
    assert second.status.term > first.status.term


async def test_python_m_scheduler_leads_and_stops_cleanly_on_sigterm(js, names, nats_url):
    env = {
        **os.environ,
        "NATS_URL": nats_url,
        "INFERNO_NAMESPACE": names.namespace,
        "INFERNO_LEASE_TTL_S": "1",
        "INFERNO_HEARTBEAT_TTL_S": "2",
        "INFERNO_LOG_FORMAT": "json",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "inferno.scheduler",
        "--scheduler-id",
        "main-1",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output = asyncio.create_task(process.stdout.read())  # type: ignore[union-attr]

    async def holds_lease() -> bool:
        assert process.returncode is None, "the scheduler exited"
        try:
            entry = await (await js.key_value(names.leader_bucket)).get("scheduler")
        except (nats.errors.Error, KeyNotFoundError):
            return False
        return json.loads(entry.value)["scheduler_id"] == "main-1"

    try:
        await eventually(holds_lease, timeout=15, what="the subprocess to lead")
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 10)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = (await output).decode()
    assert code == 0, text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    config = next(line for line in lines if line["event"] == "effective_config")
    assert (config["lease_ttl_s"], config["scheduler_id"], config["service"]) == (
        1.0,
        "main-1",
        "scheduler",
    )
    assert any(line["event"] == "leader" for line in lines)
    with pytest.raises(KeyNotFoundError):
        await (await js.key_value(names.leader_bucket)).get("scheduler")  # released at once
