"""One leadership term: rebuild the state from EVT, follow CMD and EXEC, decide, append, send work.

The decision loop is the only code that touches the state, so it needs no locks:
1. wait for input (commands and reports arrive on one queue, in stream order per stream) or for
   `tick_interval`, then take everything queued;
2. `decide` each input and `evolve` its events into the state at once, so the next decision in the
   batch sees them;
3. one tick: expire executors whose heartbeat lapsed, fill free slots;
4. append the batch's decisions in order, fenced with the last EVT sequence this term knows: each
   decision all-or-nothing (single events pipelined, several as one atomic batch; each assignment
   of a tick is a decision of its own), then publish the work orders it assigned.
Between steps 2 and 4 the state is ahead of the log. That is safe because nothing leaves the term
before the append succeeds, and a failed append ends the term: `StaleWriter` means another writer
appended, so the state is thrown away and rebuilt from the log (never appended on), and a lost
lease means another scheduler decides from here on. For the same reason a snapshot of the state
is offered only after step 4 succeeded, when the state is exactly the fold of EVT up to
`evt_last_seq`; a term starts from the newest snapshot and replays only what came after it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
import structlog
from nats.js import JetStreamContext

from inferno.events import (
    State,
    decide,
    decode_command,
    decode_event,
    decode_report,
    encode,
    evolve,
    subject_for,
)
from inferno.events.batches import decide_each, group_assignments, group_completions
from inferno.events.commands import AnyCommand, AssignWork, Report, ShardsFinished
from inferno.events.events import Event, OperationFailed, ShardAssigned, ShardsAssigned
from inferno.events.ledger import budgeted
from inferno.events.names import Names
from inferno.events.state import STATE_VERSION
from inferno.events.work import WorkBatch, assigned_batch, in_flight_batches, queue_capacity
from inferno.jetstream import (
    DEFAULT_CADENCE,
    MAX_BATCH,
    Appender,
    Cadence,
    LogUnavailable,
    Outgoing,
    SnapshotStore,
    SnapshotWriter,
    StaleWriter,
    follow,
    replay,
)
from inferno.scheduler import metrics
from inferno.scheduler.lease import Lease
from inferno.scheduler.roster import Roster, tick_messages

_log = structlog.get_logger(__name__)

Outcome = Literal["stopped", "deposed", "stale"]
Item = tuple[str, int, Any]  # ("cmd" | "rpt", stream sequence, decoded command or report)
SNAPSHOT_MODEL = "decision"
SNAPSHOT_LANDING_S = 5.0  # how long a term's end waits for a snapshot upload to finish
_state_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(State)


@dataclass
class Status:
    """What a scheduler is doing, for tests and operators: the leader's state is the live one."""

    scheduler_id: str = ""
    leading: bool = False
    term: int = 0
    state: State | None = None
    evt_last_seq: int = 0
    snapshot_seq: int = 0  # the EVT sequence of the snapshot this term started from; 0: none
    appends: int = 0
    events_appended: int = 0
    orders_sent: int = 0
    stale_rebuilds: int = 0
    ticks: int = 0  # assignment passes decided: a test can wait for some to pass


@dataclass(frozen=True)
class Deps:
    js: JetStreamContext
    appender: Appender
    names: Names
    lease: Lease
    roster: Roster
    status: Status
    clock: Callable[[], float]
    tick_interval: float
    heartbeat_ttl_s: float
    snapshots: SnapshotStore | None = None  # None: every term replays the whole log
    snapshot_cadence: Cadence = DEFAULT_CADENCE


@dataclass
class _Batch:
    """Decided but not yet appended: the messages, the work orders and log lines they imply,
    and what the metrics count once the append succeeded."""

    decisions: list[list[Outgoing]] = field(default_factory=list)
    orders: list[WorkBatch] = field(default_factory=list)
    lines: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    commands: list[tuple[AnyCommand, str]] = field(default_factory=list)  # (command, outcome)

    @property
    def pending(self) -> int:
        return sum(len(d) for d in self.decisions)


class _Deposed(Exception):
    """The lease was lost, or the service stops while the log is unavailable: the pending
    append is abandoned (the next leader decides the same inputs again)."""


class Term:
    """One pass of leadership over one state: `run` returns why it ended; a new term (a fresh
    replay) is the only way to continue after a failed append."""

    def __init__(self, deps: Deps, stop: asyncio.Event) -> None:
        self.d = deps
        self._stop = stop
        self.state = State()
        self.evt_last_seq = 0
        self._snapshots: SnapshotWriter | None = None
        lease = deps.lease
        self._headers = {"Inferno-Scheduler": lease.scheduler_id, "Inferno-Term": str(lease.term)}

    async def run(self) -> Outcome:
        d = self.d
        await self._rebuild()
        await self._send(in_flight_batches(self.state))
        queue: asyncio.Queue[Item] = asyncio.Queue()
        followers = []
        try:
            followers.append(
                await follow(
                    d.js,
                    d.names.cmd_stream,
                    _enqueue(queue, "cmd", decode_command),
                    start_seq=self.state.last_command_seq + 1,
                )
            )
            followers.append(
                await follow(
                    d.js,
                    d.names.exec_stream,
                    _enqueue(queue, "rpt", decode_report),
                    start_seq=self.state.last_report_seq + 1,
                )
            )
            return await self._loop(queue)
        except StaleWriter as stale:
            d.status.stale_rebuilds += 1
            _log.warning("stale writer: rebuilding from the log", error=str(stale))
            return "stale"
        except _Deposed:
            return "stopped" if self._stop.is_set() else "deposed"
        finally:
            for follower in followers:
                with contextlib.suppress(Exception):
                    await follower.stop()
            if self._snapshots is not None:  # a snapshot being saved is of the log: let it land
                await self._snapshots.wait(timeout=SNAPSHOT_LANDING_S)

    async def _rebuild(self) -> None:
        d, evt = self.d, self.d.names.evt_stream
        start = 0
        if d.snapshots is not None:
            loaded = await d.snapshots.load(SNAPSHOT_MODEL, STATE_VERSION, _state_decoder.decode)
            if loaded is not None:
                self.state, start = loaded.state, loaded.sequences.get(evt, 0)
            self._snapshots = SnapshotWriter(
                d.snapshots,
                SNAPSHOT_MODEL,
                STATE_VERSION,
                d.snapshot_cadence,
                writer=f"{d.lease.scheduler_id} term {d.lease.term}",
                since={evt: start},
            )
        state = self.state

        def apply(data: bytes, _seq: int) -> None:
            evolve(state, decode_event(data))

        self.evt_last_seq = max(start, await replay(d.js, evt, apply, start_seq=start + 1))
        status = self.d.status
        status.state, status.evt_last_seq, status.snapshot_seq = state, self.evt_last_seq, start
        _log.info(
            "state rebuilt",
            evt_last_seq=self.evt_last_seq,
            from_snapshot_seq=start,
            pipelines=len(state.pipelines),
            in_flight=sum(len(p.in_flight) for p in state.pipelines.values()),
            last_command_seq=state.last_command_seq,
            last_report_seq=state.last_report_seq,
        )

    async def _loop(self, queue: asyncio.Queue[Item]) -> Outcome:
        d = self.d
        grace_until = d.clock() + d.heartbeat_ttl_s  # let heartbeats arrive before expiring
        hurry = False
        while True:
            if self._stop.is_set():
                return "stopped"
            if not d.lease.held:
                return "deposed"
            items = await _take(queue, 0.0 if hurry else d.tick_interval)
            now = d.clock()
            batch = _Batch()
            for kind, seq, message in items:
                await self._decide(batch, kind, seq, message, now)
            expire = now >= grace_until and d.roster.synced.is_set()
            hurry = await self._tick(batch, now, expire=expire)
            await self._flush(batch)
            if self._snapshots is not None:  # everything decided is appended: state == log
                self._snapshots.offer(
                    {d.names.evt_stream: self.evt_last_seq},
                    lambda: _state_encoder.encode(self.state),
                )

    async def _decide(self, batch: _Batch, kind: str, seq: int, message: Any, now: float) -> None:
        if isinstance(message, ShardsFinished):
            await self._decide_each(batch, seq, message, now)
            return
        events = decide(self.state, message, now=now, seq=seq)
        if isinstance(message, Report):
            batch.lines.append(("debug", "report decided", _report_fields(message, seq, events)))
        if events:
            await self._record(batch, events, f"{kind}-{seq}")
        if not isinstance(message, Report):
            fields = _command_fields(message, seq, events)
            batch.lines.append(("info", "command decided", fields))
            batch.commands.append((message, fields["outcome"]))

    async def _decide_each(
        self, batch: _Batch, seq: int, message: ShardsFinished, now: float
    ) -> None:
        """Each member as if alone, evolving between them (the next one may complete the
        pipeline); the whole report is one decision, its completions one event per pipeline."""
        decided: list[Event] = []
        for report, events in decide_each(self.state, message, now=now, seq=seq):
            batch.lines.append(("debug", "report decided", _report_fields(report, seq, events)))
            decided += events
        if decided:
            await self._record(batch, group_completions(decided), f"rpt-{seq}", evolved=True)

    async def _tick(self, batch: _Batch, now: float, *, expire: bool) -> bool:
        """Expire lapsed executors, then fill free slots. True when capacity and work are left
        over (the assignment was cut at the batch limit), so the next tick should not wait."""
        d, state = self.d, self.state
        d.status.ticks += 1
        expired, assign = tick_messages(
            state, d.roster.executors, now=now, heartbeat_ttl_s=d.heartbeat_ttl_s, expire=expire
        )
        # ids name the EVT sequence the tick decided on: what is appended plus what is pending
        prefix = f"tick-{self.evt_last_seq + batch.pending}"
        index = 0
        for tick in expired:
            events = decide(state, tick, now=now)
            fields = {"executor_id": tick.executor_id, "events": [type(e).__name__ for e in events]}
            batch.lines.append(("info", "executor expired", fields))
            await self._record(batch, events, prefix, index)
            index += len(events)
        more, placed = self._place(assign, now)
        for deep in (False, True):  # slots first, then the executors' queues (ExecutorInfo.queue)
            if more:
                break
            queues = queue_capacity(state, assign, d.roster.executors, deep=deep)
            more, queued = self._place(queues, now)
            placed += queued
        if placed:
            # each assignment stands alone: one that lands is valid without the others; those
            # of the tick to one executor are one event and one work message (both passes:
            # inferno.events.batches)
            events = group_assignments(placed)
            await self._record(batch, events, prefix, index, separate=True, evolved=True)
            assigned = [e for e in events if isinstance(e, ShardAssigned | ShardsAssigned)]
            batch.orders += [assigned_batch(state, e) for e in assigned]
            shards = sum(isinstance(e, ShardAssigned) for e in placed)
            fields = _assign_fields(assign, shards, len(events))
            batch.lines.append(("debug", "tick", fields))
        return more

    def _place(self, assign: AssignWork, now: float) -> tuple[bool, list[Event]]:
        """Fill `assign`'s free slots, folding each decision into the state at once (the
        queues' pass reads the slots' pass); True when the batch limit cut it short."""
        state = self.state
        # with no free slot nothing is placed, but a budget may still stop a pipeline
        if not any(slot.free_slots for slot in assign.executors) and not budgeted(state):
            return False, []
        events = decide(state, assign, now=now)
        more = len(events) > MAX_BATCH
        events = events[:MAX_BATCH]
        for event in events:
            evolve(state, event)
        return more, events

    async def _record(
        self,
        batch: _Batch,
        events: list[Event],
        id_prefix: str,
        first_index: int = 0,
        *,
        separate: bool = False,
        evolved: bool = False,
    ) -> None:
        """Queue one decision's events for the append (`separate`: each event is a decision of
        its own) and apply them to the state (unless `evolved` already)."""
        names, state, headers = self.d.names, self.state, self._headers
        outgoing = [
            Outgoing(subject_for(names, event), encode(event), f"{id_prefix}-{index}", headers)
            for index, event in enumerate(events, first_index)
        ]
        batch.decisions.extend([[o] for o in outgoing] if separate else [outgoing])
        batch.events.extend(events)
        if not evolved:
            for event in events:
                evolve(state, event)

    async def _flush(self, batch: _Batch) -> None:
        if batch.decisions:
            await self._append(batch.decisions)
            batch.decisions = []
        metrics.appended(batch.events, batch.commands)
        batch.events, batch.commands = [], []
        for level, event, fields in batch.lines:
            getattr(_log, level)(event, evt_seq=self.evt_last_seq, **fields)
        batch.lines.clear()
        orders, batch.orders = batch.orders, []
        await self._send(orders)

    async def _append(self, decisions: list[list[Outgoing]]) -> None:
        """Each decision all-or-nothing, fenced on the last EVT sequence this leader knows:
        single events pipelined, multi-event decisions as atomic batches (Appender).

        Retries stop when the lease may have run out: a write that lands after that could land
        after the next leader has read the log (its fence would still match), and then the next
        leader's chained appends meet a stream whose last id they did not expect, which
        nats-server 2.15 takes, on a replicated stream, as a critical write error that stops the
        stream (seen in tests/e2e/test_chaos_cluster.py: "last msgid mismatch")."""
        d = self.d
        delay = 0.1
        while True:
            if not d.lease.held:
                raise _Deposed
            try:
                results = await d.appender.append_decisions(
                    d.names.evt_stream,
                    decisions,
                    expected_last_seq=self.evt_last_seq,
                    retry_for=d.lease.remaining_s,
                )
                break
            except LogUnavailable as error:
                _log.warning("log unavailable; retrying the same append", error=str(error))
                if self._stop.is_set():
                    raise _Deposed from error
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        self.evt_last_seq = results[-1].last_seq
        status = d.status
        status.evt_last_seq = self.evt_last_seq
        status.appends += 1
        status.events_appended += sum(len(decision) for decision in decisions)

    async def _send(self, orders: list[WorkBatch]) -> None:
        """Publish work messages; each carries its own msg id, so sending one twice stores it
        once. Retried until sent or the lease is lost (then the next leader sends them again)."""
        delay = 0.05
        while orders:
            results = await asyncio.gather(
                *(self._publish(order) for order in orders), return_exceptions=True
            )
            sent = [not isinstance(r, Exception) for r in results]
            failed = [o for o, ok in zip(orders, sent, strict=True) if not ok]
            self.d.status.orders_sent += sum(
                len(o.orders) for o, ok in zip(orders, sent, strict=True) if ok
            )
            if failed:
                errors = {repr(r) for r in results if isinstance(r, Exception)}
                _log.warning("work orders not sent", count=len(failed), errors=sorted(errors))
                if not self.d.lease.held:
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            orders = failed

    async def _publish(self, work: WorkBatch) -> None:
        names = self.d.names
        await self.d.js.publish(
            names.work(work.orders[0].executor_id),
            encode(work),
            stream=names.work_stream,
            headers={"Nats-Msg-Id": work.msg_id},
        )


def _enqueue(
    queue: asyncio.Queue[Item], kind: str, decoder: Callable[[bytes], Any]
) -> Callable[[bytes, int], None]:
    def handler(data: bytes, seq: int) -> None:
        try:
            message = decoder(data)
        except msgspec.DecodeError as error:
            _log.error("undecodable message skipped", kind=kind, seq=seq, error=str(error))
            return
        queue.put_nowait((kind, seq, message))

    return handler


async def _take(queue: asyncio.Queue[Item], timeout: float) -> list[Item]:
    """Everything queued; if nothing is, wait up to `timeout` for the first item."""
    try:
        items = [queue.get_nowait()]
    except asyncio.QueueEmpty:
        if timeout <= 0:
            return []
        try:
            items = [await asyncio.wait_for(queue.get(), timeout)]
        except TimeoutError:
            return []
    while True:
        try:
            items.append(queue.get_nowait())
        except asyncio.QueueEmpty:
            return items


def _command_fields(command: AnyCommand, ic_id: int, events: list[Event]) -> dict[str, Any]:
    """The canonical line of a decided command: what, on what, who, why, which request, and how
    it ended."""
    fields: dict[str, Any] = {"ic_id": ic_id, "operation": command.operation}
    fields.update((k, v) for k, v in command.target._asdict().items() if v is not None)
    fields.update(actor=command.actor, reason=command.reason, trace_id=command.trace_id)
    fields["outcome"] = metrics.outcome(events)
    if isinstance(first := events[0] if events else None, OperationFailed):
        fields["error"] = first.error
    elif events:
        fields["events"] = [type(e).__name__ for e in events]
    return fields


def _report_fields(report: Report, seq: int, events: list[Event]) -> dict[str, Any]:
    return {
        "report": report.__struct_config__.tag,
        "exec_seq": seq,
        "executor_id": report.executor_id,
        "pipeline_id": report.pipeline_id,
        "shard": report.shard,
        "attempt": report.attempt,
        "events": [type(e).__name__ for e in events],
    }


def _assign_fields(assign: AssignWork, assigned: int, messages: int) -> dict[str, Any]:
    return {
        "assigned": assigned,
        "messages": messages,
        "free_slots": sum(slot.free_slots for slot in assign.executors),
        "executors": len(assign.executors),
    }
