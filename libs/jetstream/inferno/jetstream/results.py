"""A completed shard's per-row results, wherever the executor put them.

Results that fit in one message travel inside the `ShardFinished` report that completed the shard
(INFERNO_EXEC, one JSON value per row), which saves the object store's two fsynced
messages per shard; larger ones are an object in INFERNO_RESULTS, and the report carries none.
`ShardCompleted.report_seq` names the report, so a reader asks for it and falls back to the
object. Either way a shard reads as JSONL, one row a line, byte for byte as the executor encoded
each row. The report is also the exact attempt that completed the shard, where the object holds
the latest attempt that wrote one.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterable
from typing import NamedTuple

import msgspec
import structlog
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from inferno.events.names import Names
from inferno.events.work import repair_results_name, results_name

INLINE_RESULTS_MAX = 256 * 1024
"""Results up to this many bytes go inside the report (nats-server's default max_payload is
1 MiB; an executor also keeps under half the max_payload of the server it is connected to)."""

_log = structlog.get_logger("inferno.results")


class _Member(msgspec.Struct):
    pipeline_id: int = 0
    shard: int = 0
    attempt: int = 0
    results: list[msgspec.Raw] = msgspec.field(default_factory=list)


class _Stored(_Member):
    """A report as stored: one shard's (`ShardFinished`), or several (`ShardsFinished`)."""

    reports: list[_Member] = msgspec.field(default_factory=list)


_stored_decoder = msgspec.json.Decoder(_Stored)


class CompletedShard(NamedTuple):
    experiment_id: str
    pipeline_id: int
    shard: int
    report_seq: int  # of the INFERNO_EXEC report that completed it
    repairs: tuple[int, ...] = ()  # the reports of its repairs after retries, oldest first


class _Row(msgspec.Struct):
    row_index: int = -1


_row_decoder = msgspec.json.Decoder(_Row)


def inline_payload(rows: list[bytes], limit: int) -> list[msgspec.Raw] | None:
    """The encoded rows, to go in the report, when there are some and they fit in `limit`
    bytes; else None (and an object, so that a report without results always means one)."""
    fits = rows and sum(map(len, rows)) + len(rows) <= limit
    return list(map(msgspec.Raw, rows)) if fits else None


def jsonl(rows: Iterable[bytes]) -> bytes:
    return b"".join(row + b"\n" for row in rows)


async def shard_results(js: JetStreamContext, names: Names, shard: CompletedShard) -> bytes | None:
    """The shard's results as JSONL; None when neither the report nor the object has them
    (removed by hand), which is logged. A repaired shard's rows are its own with each repair's
    rows in their place (a repair ran only rows that had failed), in the shard's row order."""
    name = results_name(shard.experiment_id, shard.pipeline_id, shard.shard)
    member = await _member(js, names, shard.report_seq, shard)
    data = await _results(js, names, member, name)
    if data is None or not shard.repairs:
        return data
    rows = data.splitlines()
    place = {_row_decoder.decode(row).row_index: i for i, row in enumerate(rows)}
    for seq in shard.repairs:
        repair = await _member(js, names, seq, shard)
        attempt = repair.attempt if repair else 0
        object_name = repair_results_name(
            shard.experiment_id, shard.pipeline_id, shard.shard, attempt
        )
        for row in (await _results(js, names, repair, object_name) or b"").splitlines():
            index = place.get(_row_decoder.decode(row).row_index)
            if index is not None:
                rows[index] = row
    return jsonl(rows)


async def _member(
    js: JetStreamContext, names: Names, seq: int, shard: CompletedShard
) -> _Member | None:
    """What the report at `seq` says of `shard`: the report, or its member for the shard."""
    if not seq:
        return None
    try:
        data = (await js.get_msg(names.exec_stream, seq)).data
    except NotFoundError:
        return None
    if not data:
        return None
    stored = _stored_decoder.decode(data)
    for member in stored.reports:
        if (member.pipeline_id, member.shard) == (shard.pipeline_id, shard.shard):
            return member
    return stored


async def _results(
    js: JetStreamContext, names: Names, member: _Member | None, name: str
) -> bytes | None:
    """The results inside the report's member, else those of object `name`."""
    if member is not None and member.results:
        return jsonl(bytes(row) for row in member.results)
    buffer = io.BytesIO()  # chunk by chunk: `.data` would be concatenated, O(n²)
    try:
        store = await js.object_store(names.results_store)
        await store.get(name, writeinto=buffer)
    except NotFoundError:
        _log.warning("results missing", name=name)
        return None
    data = buffer.getvalue()
    return data if not data or data.endswith(b"\n") else data + b"\n"


async def stream_results(
    js: JetStreamContext, names: Names, shards: Iterable[CompletedShard]
) -> AsyncIterator[bytes]:
    """The shards' results one after another; a shard whose results are gone is skipped."""
    for shard in shards:
        if data := await shard_results(js, names, shard):
            yield data
