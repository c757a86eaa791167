"""What a history query asks for, as one value: the filters, the cursor, and which subjects of
each stream can hold a match (so a reader asks JetStream for those, not for everything).

Parsing is strict and names the parameter it refuses (`QueryError.parameter`), so the api turns
it into a 400 and the CLI into a usage error with the same words.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal

import msgspec

from inferno.audit.entries import EPOCH, KINDS, Entry, Kind, shard_pipelines
from inferno.events.commands import AnyCommand, AnyReport
from inferno.events.events import (
    AnyEvent,
    BudgetExhausted,
    BudgetSet,
    PipelineCompleted,
    PipelineDeleted,
    PipelineFailed,
    PipelinePruned,
    PipelineResumed,
    PipelineRetried,
    PipelineStopped,
)
from inferno.events.names import Names
from inferno.events.provenance import verified_part

EXPERIMENT_LEVEL = frozenset(
    {
        "create_experiment",
        "experiment_created",
        "experiment_completed",
        "operation_started",
        "set_budget",
        "budget_set",
        "extend_experiment",
        "experiment_extended",
    }
)
"""Entries about a whole experiment that belong to each of its pipelines' stories."""
_PIPELINE_KINDS = tuple(
    t.kind
    for t in (
        PipelineStopped,
        PipelinePruned,
        BudgetExhausted,
        BudgetSet,
        PipelineResumed,
        PipelineRetried,
        PipelineDeleted,
        PipelineCompleted,
        PipelineFailed,
    )
)
"""Kinds on `evt.pipeline.<id>.<kind>` but `created`, which goes on the wildcard subject (a
consumer's subject filters must not overlap)."""


def _tags(union: object) -> frozenset[str]:
    return frozenset(t.__struct_config__.tag for t in union.__args__)  # type: ignore[attr-defined]


TYPES: dict[Kind, frozenset[str]] = {
    "cmd": _tags(AnyCommand),
    "evt": _tags(AnyEvent),
    "exec": _tags(AnyReport),
}


def _listing(words: Iterable[str]) -> str:
    """A pattern of comma-separated `words`: what the OpenAPI document says a value may be."""
    one = "|".join(sorted(words))
    return f"^({one})(,({one}))*$"


TYPES_PATTERN = _listing(frozenset().union(*TYPES.values()))
STREAMS_PATTERN = _listing(KINDS)
CURSOR_PATTERN = r"^(cmd|evt|exec):[0-9]{1,15}(,(cmd|evt|exec):[0-9]{1,15})*$"
EPOCH_PATTERN = r"^[0-9]{1,11}(\.[0-9]{1,9})?$"
_DATE_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})?"
)


class QueryError(ValueError):
    def __init__(self, parameter: str, reason: str) -> None:
        super().__init__(f"{parameter}: {reason}")
        self.parameter, self.reason = parameter, reason


class Query(msgspec.Struct, frozen=True, kw_only=True):
    streams: tuple[Kind, ...] = ("cmd", "evt")
    experiment_id: str | None = None
    pipeline_id: int | None = None
    ic_id: int | None = None
    types: frozenset[str] = frozenset()
    actor: str | None = None
    since_ns: int | None = None
    until_ns: int | None = None
    from_seq: int | None = None
    to_seq: int | None = None


Cursor = dict[Kind, int]
"""The last sequence read of each stream: `cmd:12,evt:340` on the wire."""


def parse_time(text: str, parameter: str) -> int:
    """RFC 3339 (a time without a zone is UTC) or epoch seconds → epoch nanoseconds, exactly.
    Only the forms the OpenAPI schema gives (`EPOCH_PATTERN`, a full date and time): a negative
    or exponent epoch, or a bare date, is refused rather than read some other way."""
    value = text.strip()
    if re.fullmatch(EPOCH_PATTERN, value):
        return int(Decimal(value) * 10**9)
    refused = QueryError(
        parameter, f"{text!r} is not an RFC 3339 time (2026-12-01T12:00:00Z) or epoch seconds"
    )
    if not _DATE_TIME.fullmatch(value):
        raise refused
    try:
        moment = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise refused from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    elapsed = moment - EPOCH  # not timestamp(): a float, ~100 ns off today
    return (elapsed.days * 86400 + elapsed.seconds) * 10**9 + elapsed.microseconds * 1000


def _parts(values: Iterable[str], parameter: str) -> set[str]:
    parts = {part.strip() for value in values for part in value.split(",")}
    if "" in parts:
        raise QueryError(parameter, "an empty value; leave the parameter out instead")
    return parts


def parse_streams(values: Iterable[str]) -> tuple[Kind, ...]:
    wanted = {part.lower() for part in _parts(values, "stream")}
    unknown = sorted(wanted - set(KINDS))
    if unknown:
        raise QueryError("stream", f"{unknown[0]!r} is not one of {', '.join(KINDS)}")
    return tuple(k for k in KINDS if k in wanted) or ("cmd", "evt")


def parse_types(values: Iterable[str]) -> frozenset[str]:
    wanted = _parts(values, "type")
    known = frozenset().union(*TYPES.values())
    unknown = sorted(wanted - known)
    if unknown:
        raise QueryError("type", f"{unknown[0]!r} is not a command, event or report type")
    return frozenset(wanted)


def parse_cursor(text: str, parameter: str = "after") -> Cursor:
    cursor: Cursor = {}
    for part in text.strip().split(","):
        kind, _, seq = part.partition(":")
        if kind not in KINDS or not seq.isdigit():
            raise QueryError(parameter, f"{text!r} is not a cursor like cmd:12,evt:340")
        cursor[kind] = int(seq)
    return cursor


def format_cursor(cursor: Mapping[Kind, int]) -> str:
    return ",".join(f"{kind}:{cursor[kind]}" for kind in KINDS if kind in cursor)


def outside_times(time_ns: int, query: Query) -> bool:
    """Whether a message stored at `time_ns` is outside since..until, both inclusive and at the
    microsecond the entries show (a time copied from an entry finds that entry)."""
    if query.since_ns is not None and time_ns < query.since_ns:
        return True
    return query.until_ns is not None and time_ns // 1000 * 1000 > query.until_ns


def _by(recorded: str | None, actor: str) -> bool:
    """An entry is by `actor` when that is its whole recorded actor or its verified identity."""
    return recorded is not None and actor in (recorded, verified_part(recorded))


def matches(entry: Entry, query: Query, experiment_of: Callable[[int], str | None]) -> bool:
    """Whether `entry` (ids filled in, settling events joined with their command) is one the
    query asks for. A pipeline's entries include its experiment's creation and its clones'."""
    ids = entry.ids
    if query.types and entry.type not in query.types:
        return False
    if query.actor is not None and not _by(entry.actor, query.actor):
        return False
    if query.ic_id is not None and ids.ic_id != query.ic_id:
        return False
    if query.experiment_id is not None and ids.experiment_id != query.experiment_id:
        return False
    pid = query.pipeline_id
    if pid is not None and not _about_pipeline(entry, pid, experiment_of):
        return False
    return _in_range(entry, query)


def _about_pipeline(entry: Entry, pid: int, experiment_of: Callable[[int], str | None]) -> bool:
    ids = entry.ids
    if ids.pipeline_id == pid or pid in shard_pipelines(entry):
        return True
    if entry.type == "pipeline_created" and entry.payload.get("parent_pipeline_id") == pid:
        return True
    return (
        entry.type in EXPERIMENT_LEVEL
        and ids.pipeline_id is None
        and ids.experiment_id is not None
        and ids.experiment_id == experiment_of(pid)
    )


def _in_range(entry: Entry, query: Query) -> bool:
    if query.from_seq is not None and entry.seq < query.from_seq:
        return False
    return query.to_seq is None or entry.seq <= query.to_seq


def subjects(query: Query, kind: Kind, names: Names, experiment_id: str | None) -> list[str]:
    """The subject filters of `kind`'s stream that can hold a match, never overlapping (a
    consumer refuses overlapping filters). `experiment_id`: the queried pipeline's experiment.
    An ic_id query is narrowed by the route, which reads the command first."""
    ns, pid = names.namespace, query.pipeline_id
    if pid is None or kind == "exec":  # exec subjects name the executor only
        return [f"{ns}.{kind}.>"]
    found = [f"{ns}.{kind}.pipeline.{pid}.>"] if kind == "cmd" else []
    if kind == "evt":
        found += [f"{ns}.evt.pipeline.{pid}.{k}" for k in _PIPELINE_KINDS]
        found += [f"{ns}.evt.pipeline.*.created", f"{ns}.evt.shard.{pid}.>", f"{ns}.evt.op.>"]
        found.append(f"{ns}.evt.executor.>")  # several shards (of any pipelines) in one event
    if experiment_id is not None:
        found.append(f"{ns}.{kind}.experiment.{experiment_id}.>")
    return found


def settle_subjects(names: Names, ic_id: int, command: AnyCommand | None) -> list[str]:
    """Where the events answering command `ic_id` can be: its op subject, and the subject of
    the event its kind of command settles with."""
    ns = names.namespace
    found = [f"{ns}.evt.op.{ic_id}.>"]
    if command is None:
        return found
    target = command.target
    if command.operation == "clone":
        found.append(f"{ns}.evt.pipeline.*.created")
    elif target.pipeline_id is not None:
        found.append(f"{ns}.evt.pipeline.{target.pipeline_id}.>")
    if target.experiment_id is not None:
        found.append(f"{ns}.evt.experiment.{target.experiment_id}.>")
    return found
