"""The scheduler's Prometheus metrics (docs/operations.md lists them).

Counters move where decisions are appended (never before: a stale batch is thrown away), so they
count what the log holds. The decision loop pays a tally of the batch's event types and one
`inc` per kind (about 10 us for 128 events); gauges (pending shards, term, replay lag) are
computed at scrape time from `Status`, on the loop (inferno.runtime.metrics), so the loop pays
nothing for them. Labels are bounded: operation
names, outcomes and event kinds; no pipeline or executor ids.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from nats.js import JetStreamContext
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from inferno.events.batches import expand_all
from inferno.events.commands import AnyCommand
from inferno.events.events import (
    Event,
    OperationFailed,
    ShardAssigned,
    ShardCompleted,
    ShardFailed,
    ShardReleased,
)
from inferno.events.names import Names
from inferno.runtime.metrics import last_seq

if TYPE_CHECKING:  # the leader counts through this module
    from inferno.scheduler.leader import Status

OPERATIONS = Counter(
    "inferno_scheduler_operations",
    "Interactive-control commands decided, by operation and outcome",
    ["operation", "outcome"],
)
IC_LATENCY = Histogram(
    "inferno_scheduler_ic_latency_seconds",
    "From a command's issue (the api stores it at once) to its outcome stored in the log",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
SHARDS = Counter(
    "inferno_scheduler_shards",
    "Shard decisions appended: assigned, completed, failed (for good), retried (released)",
    ["event"],
)
_SHARD_EVENTS: dict[type, Counter] = {
    ShardAssigned: SHARDS.labels("assigned"),
    ShardCompleted: SHARDS.labels("completed"),
    ShardFailed: SHARDS.labels("failed"),
    ShardReleased: SHARDS.labels("retried"),
}


def outcome(events: list[Event]) -> str:
    """completed, failed, or already decided (a command seen again after a restart)."""
    if not events:
        return "already decided"
    return "failed" if isinstance(events[0], OperationFailed) else "completed"


def appended(events: Iterable[Event], commands: Iterable[tuple[AnyCommand, str]]) -> None:
    """Count what one append stored: its shard events, and each command with its outcome."""
    if events:
        for kind, count in collections.Counter(map(type, expand_all(events))).items():
            counter = _SHARD_EVENTS.get(kind)
            if counter is not None:
                counter.inc(count)
    now = time.time()
    for command, result in commands:
        OPERATIONS.labels(command.operation, result).inc()
        if command.issued_at > 0 and result != "already decided":
            IC_LATENCY.observe(max(now - command.issued_at, 0.0))


class StateCollector(Collector):
    """Gauges over the leader's live state, read at scrape time: pending shards, in flight,
    leading and term, and how far the decision state is behind CMD and EXEC."""

    def __init__(self, status: Status) -> None:
        self.status = status
        self.stream_last: dict[str, int] = {}  # "cmd"/"exec" -> last sequence, by `refresh`

    async def refresh(self, js: JetStreamContext, names: Names) -> None:
        for kind, stream in (("cmd", names.cmd_stream), ("exec", names.exec_stream)):
            self.stream_last[kind] = await last_seq(js, stream)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        status = self.status
        yield _gauge("inferno_scheduler_leading", "1 while this scheduler leads", status.leading)
        yield _gauge("inferno_scheduler_leader_term", "The lease term last led", status.term)
        state = status.state if status.leading else None
        if state is None:
            return
        runnable = [p for p in state.pipelines.values() if p.runnable]
        pending = sum(p.num_shards - len(p.completed) - len(p.in_flight) for p in runnable)
        in_flight = sum(len(p.in_flight) for p in state.pipelines.values())
        yield _gauge("inferno_scheduler_pending_shards", "Shards of runnable pipelines", pending)
        yield _gauge("inferno_scheduler_in_flight_shards", "Shards assigned, not done", in_flight)
        lag = GaugeMetricFamily(
            "inferno_scheduler_replay_lag",
            "Messages of the stream the decision state has not folded yet",
            labels=["stream"],
        )
        folded = {"cmd": state.last_command_seq, "exec": state.last_report_seq}
        for kind, last in self.stream_last.items():
            lag.add_metric([kind], max(last - folded[kind], 0))
        yield lag


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=float(value))
