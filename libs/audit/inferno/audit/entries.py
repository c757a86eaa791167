"""History entries: one stored message (a command, an event or a report) as people read it.

An entry says where it is in the log (stream, sequence, the server's time), what it is (`type`:
the message's tag), who and why (`actor`, `reason`, `trace_id`: a command's own, and for an
event that settles an operation, its command's), what it is about (`ids`) and the payload with
secrets masked. Built from raw bytes so a type this code does not know still shows, as stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import msgspec

from inferno.events.codec import UnknownEvent, decode_command, decode_event, decode_report
from inferno.events.commands import AnyCommand, Target
from inferno.secrets.masking import mask_value

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
Kind = Literal["cmd", "evt", "exec"]
KINDS: tuple[Kind, ...] = ("cmd", "evt", "exec")
_TAG_FIELD: dict[Kind, str] = {"cmd": "command", "evt": "type", "exec": "report"}


class Ids(msgspec.Struct, omit_defaults=True, kw_only=True):
    """What an entry is about; only the ids it has are set."""

    ic_id: int | None = None
    experiment_id: str | None = None
    pipeline_id: int | None = None
    context_id: str | None = None
    shard: int | None = None


class Entry(msgspec.Struct, kw_only=True):
    stream: str
    seq: int
    time: str
    """The server's time of the message, RFC 3339 in UTC with microseconds."""
    type: str
    actor: str | None = None
    reason: str | None = None
    trace_id: str | None = None
    ids: Ids = msgspec.field(default_factory=Ids)
    payload: dict[str, Any] = msgspec.field(default_factory=dict)

    @property
    def kind(self) -> Kind:
        return stream_kind(self.stream)


class Who(msgspec.Struct, frozen=True):
    """A command's who-and-why and target, which the events settling it are shown with."""

    actor: str | None
    reason: str | None
    trace_id: str | None
    target: Target


entry_decoder = msgspec.json.Decoder(Entry)
entries_decoder = msgspec.json.Decoder(list[Entry])
_raw = msgspec.json.Decoder(dict[str, Any])


def stream_kind(stream: str) -> Kind:
    """`INFERNO_CMD` → "cmd": stream names end in the kind (inferno.events.names)."""
    suffix = stream.rsplit("_", 1)[-1].lower()
    if suffix not in KINDS:
        raise ValueError(f"{stream!r} is not a stream of the log")
    return suffix


def moment(time_ns: int) -> datetime:
    """Epoch nanoseconds as a datetime, truncated to the microsecond (never rounded up: a time
    shown must not pass over the message it was read from)."""
    return EPOCH + timedelta(microseconds=time_ns // 1000)


def rfc3339(time_ns: int) -> str:
    return moment(time_ns).isoformat(timespec="microseconds").replace("+00:00", "Z")


def who(command: AnyCommand) -> Who:
    return Who(command.actor, command.reason, command.trace_id, command.target)


def build(stream: str, seq: int, time_ns: int, data: bytes) -> tuple[Entry, Who | None]:
    """The entry for one stored message, and for a command its `Who` (to show its events with).
    A payload that is not even JSON becomes an entry of type "undecodable"."""
    kind = stream_kind(stream)
    entry = Entry(stream=stream, seq=seq, time=rfc3339(time_ns), type="undecodable")
    try:
        payload = _raw.decode(data)
    except msgspec.DecodeError:
        return entry, None
    if kind == "exec":  # results are carried for the results route, not shown
        for report in [payload, *payload.get("reports", [])]:  # a ShardsFinished has several
            if isinstance(report, dict) and isinstance(rows := report.get("results"), list):
                report["results"] = {"rows": len(rows)}
    entry.payload = mask_value(payload)
    entry.type = str(payload.get(_TAG_FIELD[kind], "unknown"))
    try:
        if kind == "cmd":
            command = decode_command(data)
            entry.ids = _target_ids(command.target, ic_id=seq)
            found = who(command)
            entry.actor, entry.reason, entry.trace_id = found.actor, found.reason, found.trace_id
            return entry, found
        message = decode_event(data) if kind == "evt" else decode_report(data)
    except (msgspec.DecodeError, msgspec.ValidationError):  # a newer writer's type: as stored
        return entry, None
    if not isinstance(message, UnknownEvent):
        entry.ids = Ids(
            ic_id=getattr(message, "ic_id", 0) or None,
            experiment_id=getattr(message, "experiment_id", None),
            pipeline_id=getattr(message, "pipeline_id", None),
            context_id=getattr(message, "context_id", None),
            shard=getattr(message, "shard", None),
        )
    return entry, None


_SINGLE = {"shards_assigned": "shard_assigned", "shards_completed": "shard_completed"}


def shard_pipelines(entry: Entry) -> set[int]:
    """The pipelines a batch event's or report's shards belong to (none for other entries)."""
    if entry.kind == "exec" and entry.type == "shards_finished":
        reports = entry.payload.get("reports", [])
        return {r["pipeline_id"] for r in reports if isinstance(r.get("pipeline_id"), int)}
    if entry.type not in _SINGLE or entry.kind != "evt":
        return set()
    return {one.ids.pipeline_id for one in each_shard([entry]) if one.ids.pipeline_id is not None}


def each_shard(entries: Sequence[Entry]) -> list[Entry]:
    """Entries with each batch event (`shards_assigned`, `shards_completed`: several shards in
    one message, inferno.events.batches) as one entry per shard, as if stored one by one: for
    the checks and stories that follow shards."""
    out: list[Entry] = []
    for entry in entries:
        single = _SINGLE.get(entry.type)
        if single is None or entry.kind != "evt":
            out.append(entry)
            continue
        for shard in entry.payload.get("shards", []):
            # an assignment's members are [pipeline_id, shard, attempt]; a completion's,
            # objects with stats
            if isinstance(shard, list):
                shard = dict(zip(("pipeline_id", "shard", "attempt"), shard, strict=False))
            payload = {**entry.payload, **shard}
            payload.pop("shards")
            ids = msgspec.structs.replace(
                entry.ids, pipeline_id=payload.get("pipeline_id"), shard=payload.get("shard")
            )
            out.append(msgspec.structs.replace(entry, type=single, ids=ids, payload=payload))
    return out


def _target_ids(target: Target, ic_id: int | None = None) -> Ids:
    return Ids(
        ic_id=ic_id,
        pipeline_id=target.pipeline_id,
        context_id=target.context_id,
        experiment_id=target.experiment_id,
    )


def settled_by(entry: Entry, command: Who) -> Entry:
    """An event settling an operation, shown with its command's who and why; the ids it lacks
    come from what the command targets (a clone's new pipeline keeps its own id)."""
    entry.actor, entry.reason, entry.trace_id = command.actor, command.reason, command.trace_id
    ids, target = entry.ids, command.target
    if ids.pipeline_id is None and ids.context_id is None and ids.experiment_id is None:
        entry.ids = _target_ids(target, ids.ic_id)
        entry.ids.shard = ids.shard
    return entry


def with_experiment(entry: Entry, experiment_id: str | None) -> Entry:
    """`experiment_id` filled in where the message names only a pipeline or context."""
    if entry.ids.experiment_id is None and experiment_id is not None:
        entry.ids.experiment_id = experiment_id
    return entry
