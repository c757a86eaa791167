"""Several shards in one message, each way (issue 10): what a log stores per shard is fsyncs.

With `sync_interval: always` nats-server fsyncs every stored message, so a shard's cost is the
messages it stores, not their size (docs/benchmarks.md). The decider still decides one shard at
a time; what is written is coalesced per executor (lockstep placement spreads a pipeline's
shards over executors, so per pipeline there would be little to coalesce):
- a tick's assignments to one executor become one `ShardsAssigned` (and one work message,
  `inferno.events.work.WorkBatch`);
- an executor reports the finished shards of a work message together (`ShardsFinished`), and
  the completions one report decides become one `ShardsCompleted`.
A batch event folds as the single events it stands for (`expanded`), in their order, so a
reader that wants shards sees exactly what it would have seen one message at a time. A single
shard is still written as `ShardAssigned` / `ShardCompleted`.
"""

from __future__ import annotations

from collections.abc import Iterable

from inferno.events.codec import UnknownEvent
from inferno.events.commands import AnyReport, Report, ShardFinished, ShardsFinished
from inferno.events.decide import decide
from inferno.events.events import (
    AssignedShard,
    CompletedShard,
    Event,
    ShardAssigned,
    ShardCompleted,
    ShardsAssigned,
    ShardsCompleted,
)
from inferno.events.state import State, evolve


def expanded(event: Event | UnknownEvent) -> list[Event | UnknownEvent]:
    """The single events a stored event stands for: itself, or a batch's members."""
    if isinstance(event, ShardsAssigned | ShardsCompleted):
        return list(event.each())
    return [event]


def members(report: AnyReport) -> list[Report]:
    """The single reports a stored report stands for: itself, or a batch's members."""
    return list(report.reports) if isinstance(report, ShardsFinished) else [report]


def expand_all(events: Iterable[Event | UnknownEvent]) -> list[Event | UnknownEvent]:
    return [one for event in events for one in expanded(event)]


def decide_each(
    state: State, report: ShardsFinished, *, now: float, seq: int
) -> list[tuple[ShardFinished, list[Event]]]:
    """Each member decided as if it came alone, and folded into `state` before the next (it
    may complete the pipeline): the shell's step, for a report of several shards. Store
    `group_completions` of all their events as one decision."""
    decided = []
    for member in report.reports:
        events = decide(state, member, now=now, seq=seq)
        for event in events:
            evolve(state, event)
        decided.append((member, events))
    return decided


def group_assignments(events: list[Event]) -> list[Event]:
    """A tick's assignments, one event per executor, where its first one was.
    Each assignment stands alone, so grouping them changes no fold: they touch different
    shards."""
    groups: dict[tuple[str, float], list[ShardAssigned]] = {}
    order: list[Event | tuple[str, float]] = []
    for event in events:
        if isinstance(event, ShardAssigned):
            key = (event.executor_id, event.at)
            if key not in groups:
                groups[key] = []
                order.append(key)
            groups[key].append(event)
        else:
            order.append(event)
    return [_assigned(groups[item]) if isinstance(item, tuple) else item for item in order]


def group_completions(events: list[Event]) -> list[Event]:
    """Runs of adjacent `ShardCompleted` of one executor and report as one event.
    Only adjacent ones: their batch expands back to exactly the same sequence."""
    out: list[Event] = []
    run: list[ShardCompleted] = []
    for event in [*events, None]:
        if isinstance(event, ShardCompleted) and (not run or _same_report(run[0], event)):
            run.append(event)
            continue
        if run:
            out.append(_completed(run))
            run = []
        if isinstance(event, ShardCompleted):
            run.append(event)
        elif event is not None:
            out.append(event)
    return out


def _same_report(a: ShardCompleted, b: ShardCompleted) -> bool:
    return (a.executor_id, a.report_seq, a.at) == (b.executor_id, b.report_seq, b.at)


def _assigned(run: list[ShardAssigned]) -> Event:
    first = run[0]
    if len(run) == 1:
        return first
    return ShardsAssigned(
        at=first.at,
        executor_id=first.executor_id,
        shards=[AssignedShard(e.pipeline_id, e.shard, e.attempt) for e in run],
    )


def _completed(run: list[ShardCompleted]) -> Event:
    first = run[0]
    if len(run) == 1:
        return first
    return ShardsCompleted(
        at=first.at,
        executor_id=first.executor_id,
        report_seq=first.report_seq,
        shards=[
            CompletedShard(
                pipeline_id=e.pipeline_id, shard=e.shard, attempt=e.attempt, stats=e.stats
            )
            for e in run
        ],
    )
