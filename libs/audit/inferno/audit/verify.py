"""`inferno verify`: the invariants a whole log must hold, checked on its history entries.

Each check is a pure function of the entries of INFERNO_CMD and INFERNO_EVT (in stream order)
that returns its violations, each pointing at the message (stream, sequence) that breaks it.
`report` runs them all and says the log's extent and counts beside them, in a form an auditor
keeps (`as_text`, or the Report as JSON).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import msgspec

from inferno.audit.entries import Entry, each_shard

WORK = frozenset({"shard_assigned", "shard_completed", "shard_failed"})
FINAL_V1 = frozenset({"operation_completed", "operation_failed"})


class Violation(msgspec.Struct, frozen=True):
    check: str
    stream: str
    seq: int
    message: str


class Extent(msgspec.Struct):
    messages: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    first_time: str | None = None
    last_time: str | None = None


class Check(msgspec.Struct):
    what: str
    held: bool
    violations: int


class Report(msgspec.Struct):
    held: bool
    extent: dict[str, Extent]
    counts: dict[str, int]
    checks: dict[str, Check]
    violations: list[Violation]
    pending: list[int]
    """ic_ids whose command is stored and not answered yet (no violation: the scheduler may
    not have decided them yet)."""


def shard_completed_once(events: Sequence[Entry]) -> list[Violation]:
    first: dict[tuple[int | None, int | None], int] = {}
    found = []
    for e in events:
        if e.type == "shard_completed":
            key = (e.ids.pipeline_id, e.ids.shard)
            if key in first:
                message = (
                    f"pipeline {key[0]} shard {key[1]} completed again (first at {first[key]})"
                )
                found.append(Violation("shard_completed_once", e.stream, e.seq, message))
            else:
                first[key] = e.seq
    return found


def completed_by_its_assignment(events: Sequence[Entry]) -> list[Violation]:
    """A shard completes by the attempt it was last assigned (a stale attempt never counts)."""
    assigned: dict[tuple[int | None, int | None], object] = {}
    found = []
    for e in events:
        key = (e.ids.pipeline_id, e.ids.shard)
        if e.type == "shard_assigned":
            assigned[key] = e.payload.get("attempt")
        elif e.type == "shard_completed" and assigned.get(key) != e.payload.get("attempt"):
            message = (
                f"pipeline {key[0]} shard {key[1]} completed by attempt {e.payload.get('attempt')},"
                f" but the attempt assigned was {assigned.get(key, 'none')}"
            )
            found.append(Violation("completed_by_its_assignment", e.stream, e.seq, message))
    return found


def no_work_after_deletion(events: Sequence[Entry]) -> list[Violation]:
    deleted: dict[int | None, int] = {}
    found = []
    for e in events:
        pid = e.ids.pipeline_id
        if e.type == "pipeline_deleted":
            deleted.setdefault(pid, e.seq)
        elif e.type in WORK and pid in deleted:
            message = f"{e.type} for pipeline {pid}, deleted at {deleted[pid]}"
            found.append(Violation("no_work_after_deletion", e.stream, e.seq, message))
    return found


def operations_move_forward(events: Sequence[Entry]) -> list[Violation]:
    """An operation is answered once: nothing carries its ic_id after the answer (schema v1:
    `operation_started` first, then the answer)."""
    answered: dict[int, int] = {}
    found = []
    for e in events:
        ic_id = e.ids.ic_id
        if ic_id is None:
            continue
        if ic_id in answered:
            message = f"{e.type} for ic_id {ic_id}, already answered at {answered[ic_id]}"
            found.append(Violation("operations_move_forward", e.stream, e.seq, message))
        elif e.type != "operation_started":
            answered[ic_id] = e.seq
    return found


def answered_or_pending(commands: Sequence[Entry], events: Sequence[Entry]) -> list[Violation]:
    """Every answer is to a stored command, and an operation started (v1) also finished."""
    issued = {c.seq for c in commands}
    started: dict[int, Entry] = {}
    finished: set[int] = set()
    found = []
    for e in events:
        ic_id = e.ids.ic_id
        if ic_id is None:
            continue
        if ic_id not in issued:
            message = f"{e.type} answers ic_id {ic_id}, which is no command in the log"
            found.append(Violation("answered_or_pending", e.stream, e.seq, message))
        if e.type == "operation_started":
            started.setdefault(ic_id, e)
        else:
            finished.add(ic_id)
    for ic_id, e in started.items():
        if ic_id not in finished:
            message = f"ic_id {ic_id} started and never finished"
            found.append(Violation("answered_or_pending", e.stream, e.seq, message))
    return found


CHECKS: dict[str, tuple[str, Callable[[Sequence[Entry], Sequence[Entry]], list[Violation]]]] = {
    "shard_completed_once": (
        "each shard of a pipeline completed at most once",
        lambda c, e: shard_completed_once(e),
    ),
    "completed_by_its_assignment": (
        "a shard completes by the attempt last assigned",
        lambda c, e: completed_by_its_assignment(e),
    ),
    "no_work_after_deletion": (
        "no shard work for a pipeline after its deletion",
        lambda c, e: no_work_after_deletion(e),
    ),
    "operations_move_forward": (
        "an operation is answered once and never moves back",
        lambda c, e: operations_move_forward(e),
    ),
    "answered_or_pending": (
        "every answer is to a stored command; every started operation finished",
        answered_or_pending,
    ),
}


def report(entries: Sequence[Entry]) -> Report:
    by_stream: dict[str, list[Entry]] = {}
    for entry in entries:
        by_stream.setdefault(entry.kind, []).append(entry)
    commands = sorted(by_stream.get("cmd", []), key=lambda e: e.seq)
    events = sorted(by_stream.get("evt", []), key=lambda e: e.seq)
    violations: list[Violation] = []
    checks = {}
    shards = each_shard(events)  # the checks follow shards, several to a batch event
    for name, (what, run) in CHECKS.items():
        found = run(commands, shards)
        checks[name] = Check(what, not found, len(found))
        violations += found
    answered = {e.ids.ic_id for e in events if e.ids.ic_id is not None}
    extent = {}
    for stream_entries in (commands, events):
        if stream_entries:
            first, last = stream_entries[0], stream_entries[-1]
            extent[first.stream] = Extent(
                len(stream_entries), first.seq, last.seq, first.time, last.time
            )
    return Report(
        held=not violations,
        extent=extent,
        counts=dict(sorted(Counter(e.type for e in entries).items())),
        checks=checks,
        violations=violations,
        pending=sorted(c.seq for c in commands if c.seq not in answered),
    )


def as_text(result: Report, checked_at: str) -> list[str]:
    """The report as lines to print or keep."""
    lines = [f"inferno verify, {checked_at}: {'ALL HELD' if result.held else 'VIOLATED'}"]
    for stream, ext in result.extent.items():
        lines.append(
            f"  {stream}: {ext.messages} messages, seq {ext.first_seq}..{ext.last_seq},"
            f" {ext.first_time} .. {ext.last_time}"
        )
    if not result.extent:
        lines.append("  the log is empty")
    lines.append("counts: " + ", ".join(f"{t} {n}" for t, n in result.counts.items()))
    for name, check in result.checks.items():
        verdict = "held" if check.held else f"VIOLATED ({check.violations})"
        lines.append(f"  {verdict:<16} {name}: {check.what}")
    for v in result.violations:
        lines.append(f"violation: {v.stream} seq {v.seq}: {v.check}: {v.message}")
    if result.pending:
        shown = ", ".join(str(i) for i in result.pending[:20])
        more = f" and {len(result.pending) - 20} more" if len(result.pending) > 20 else ""
        lines.append(f"pending (not answered yet): ic_id {shown}{more}")
    return lines
