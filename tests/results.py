"""Reading a shard's results in tests as the api does (`inferno.jetstream.results`): from the
report that finished it, else from INFERNO_RESULTS. Tests without a scheduler have no
`ShardCompleted` to name the report, so the last `ShardFinished` for the shard (alone, or in a
`ShardsFinished`) stands in."""

from __future__ import annotations

from typing import Any

from nats.js import JetStreamContext
from nats.js.api import ObjectInfo
from nats.js.errors import NotFoundError

from inferno.datasets.store import from_jsonl
from inferno.events import Names
from inferno.events.batches import members
from inferno.events.codec import decode_report
from inferno.events.commands import ShardFinished
from inferno.jetstream import replay
from inferno.jetstream.results import CompletedShard, shard_results


async def finished_seq(js: JetStreamContext, names: Names, pipeline_id: int, shard: int) -> int:
    """The stream sequence of the last `ShardFinished` of the shard (0: none)."""
    last = 0

    def keep(data: bytes, seq: int) -> None:
        nonlocal last
        for report in members(decode_report(data)):
            if isinstance(report, ShardFinished) and (report.pipeline_id, report.shard) == (
                pipeline_id,
                shard,
            ):
                last = seq

    await replay(js, names.exec_stream, keep)
    return last


async def results_jsonl(
    js: JetStreamContext, names: Names, experiment_id: str, pipeline_id: int, shard: int = 0
) -> bytes:
    seq = await finished_seq(js, names, pipeline_id, shard)
    found = await shard_results(js, names, CompletedShard(experiment_id, pipeline_id, shard, seq))
    return found or b""


async def results_rows(
    js: JetStreamContext, names: Names, experiment_id: str, pipeline_id: int, shard: int = 0
) -> list[dict[str, Any]]:
    return from_jsonl(await results_jsonl(js, names, experiment_id, pipeline_id, shard))


async def stored_objects(js: JetStreamContext, bucket: str) -> list[ObjectInfo]:
    """The bucket's objects; nats-py's `list` raises NotFoundError for an empty one."""
    try:
        return await (await js.object_store(bucket)).list()
    except NotFoundError:
        return []
