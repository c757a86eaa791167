"""A run over a stored dataset on a live cluster (nats-server, api, two schedulers, two executors
as separate processes): the file is streamed to the api, stored in blocks, and the executors
read those blocks, never a whole-dataset object, each block at most once each."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import httpx
import pytest
from nats.js.errors import NotFoundError
from prometheus_client.parser import text_string_to_metric_families

from inferno.datasets.objects import read_manifest
from inferno.datasets.store import dataset_ref, to_jsonl

if TYPE_CHECKING:
    from conftest import Live

ROWS = [{"id": i, "question": f"{i}+{i}?", "answer": str(2 * i)} for i in range(12000)]
JSONL = to_jsonl(ROWS)


async def chunks() -> AsyncIterator[bytes]:
    for start in range(0, len(JSONL), 64 << 10):
        yield JSONL[start : start + (64 << 10)]


async def blocks_read(urls: dict[str, str]) -> float:
    total = 0.0
    async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
        for name, url in urls.items():
            if name.startswith("exec"):
                text = (await http.get(url)).text
                total += sum(
                    s.value
                    for f in text_string_to_metric_families(text)
                    for s in f.samples
                    if s.name == "inferno_executor_dataset_blocks_total"
                    and s.labels["source"] == "store"
                )
    return total


async def test_a_run_over_a_streamed_dataset_reads_it_block_by_block(shared_live: Live) -> None:
    live = shared_live
    answer = await live.http.post(
        "/api/v1/datasets", content=chunks(), headers={"Content-Type": "application/x-ndjson"}
    )
    assert answer.status_code == 200, answer.text
    ref = answer.json()["dataset_ref"]
    assert answer.json() == {"dataset_ref": dataset_ref(JSONL), "row_count": len(ROWS)}
    store = await live.js.object_store(live.names.data_store)
    manifest = await read_manifest(store, ref)
    assert manifest is not None
    assert len(manifest.blocks) >= 2
    urls = live.cluster.describe()["metrics"]
    before = await blocks_read(urls)

    body = live.experiment_body(live.sim("big", latency_ms=0), name="big", num_shards=24)
    body["dataset"] = {"ref": ref}
    created = await live.create_experiment(body)
    [p] = await live.settled(created["pipelines"][0]["pipeline_id"])
    assert (p["status"], p["shards_completed"], p["rows_processed"]) == ("completed", 24, 12000)
    live.assert_run_complete(await live.events())

    read = await blocks_read(urls) - before
    assert len(manifest.blocks) <= read <= live.cluster.executor_count * len(manifest.blocks)
    with pytest.raises(NotFoundError):  # nothing whole to read: the rows are in blocks only
        await store.get_info(ref)
