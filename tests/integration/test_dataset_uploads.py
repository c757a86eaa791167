"""Big datasets through the api and an executor's cache, on a real nats-server: uploads are
parsed as they stream in and stored in blocks, a bad row or an oversized body leaves nothing,
creating an experiment reads only the manifest, and an executor reads only its shard's blocks."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from nats.js.object_store import ObjectStore
from prometheus_client import REGISTRY

from inferno.api.app import create_app
from inferno.datasets.blocks import Manifest
from inferno.datasets.objects import read_block, read_manifest
from inferno.datasets.store import dataset_ref, to_jsonl
from inferno.events import Names, decode_command
from inferno.executor.datasets import DatasetCache
from inferno.runtime.settings import Settings

# strings only, so CSV (whose values stay strings) holds the same rows; ~4 blocks of 256 KiB
ROWS = [
    {"id": str(i), "question": f"what is {i} + {i}?", "answer": str(2 * i)} for i in range(20000)
]
JSONL = to_jsonl(ROWS)
REF = dataset_ref(JSONL)


@asynccontextmanager
async def running_api(nc: NATS, names: Names, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(namespace=names.namespace, **settings), nc=nc)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            yield client


async def chunks(data: bytes, size: int = 64 << 10) -> AsyncIterator[bytes]:
    """A body sent as it is read (chunked, no Content-Length), as a big upload comes in."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def stored_objects(js: JetStreamContext, names: Names) -> list[str]:
    store = await js.object_store(names.data_store)
    try:
        return sorted(info.name for info in await store.list(ignore_deletes=True))
    except NotFoundError:  # nats-py: an empty store
        return []


async def upload(client: httpx.AsyncClient, data: bytes, media: str) -> httpx.Response:
    return await client.post(
        "/api/v1/datasets", content=chunks(data), headers={"Content-Type": media}
    )


def csv_of(rows: list[dict[str, str]]) -> bytes:
    return (
        "id,question,answer\n" + "".join(f"{r['id']},{r['question']},{r['answer']}\n" for r in rows)
    ).encode()


def parquet_of(rows: list[dict[str, str]]) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer, row_group_size=3000)
    return buffer.getvalue()


async def manifest_of(store: ObjectStore, ref: str) -> Manifest:
    manifest = await read_manifest(store, ref)
    assert manifest is not None, f"{ref} has no manifest"
    return manifest


async def test_streamed_uploads_in_every_format_are_one_dataset_in_blocks(
    nc: NATS, js: JetStreamContext, names: Names
) -> None:
    async with running_api(nc, names) as client:
        answers = [
            await upload(client, JSONL, "application/x-ndjson"),
            await upload(client, csv_of(ROWS), "text/csv"),
            await upload(client, parquet_of(ROWS), "application/vnd.apache.parquet"),
            await client.post("/api/v1/datasets", files={"file": ("rows.csv", csv_of(ROWS))}),
        ]
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"dataset_ref": REF, "row_count": len(ROWS)}
    store = await js.object_store(names.data_store)
    manifest = await manifest_of(store, REF)
    assert (manifest.row_count, manifest.size) == (len(ROWS), len(JSONL))
    assert manifest.columns == ["answer", "id", "question"]
    assert len(manifest.blocks) >= 4
    assert b"".join([await read_block(store, b) for b in manifest.blocks]) == JSONL
    # the three later uploads found the rows stored and removed their own blocks
    blocks = [name for name in await stored_objects(js, names) if name.startswith("blocks/")]
    assert blocks == sorted(b.name for b in manifest.blocks)


async def test_a_bad_row_late_in_an_upload_leaves_nothing_stored(
    nc: NATS, js: JetStreamContext, names: Names
) -> None:
    bad_line = len(ROWS) + 1
    async with running_api(nc, names) as client:
        answer = await upload(client, JSONL + b'{"id": "x", \n', "application/x-ndjson")
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"].startswith(
            f"request body: the jsonl file line {bad_line}: invalid JSON"
        )
        short = csv_of(ROWS[:9000]) + b"9000,a column short\n"  # line 9002: after the header
        answer = await client.post("/api/v1/datasets", files={"file": ("r.csv", short)})
        assert answer.status_code == 400, answer.text
        assert "field 'file': the csv file line 9002: expected 3 columns" in answer.json()["error"]
    assert await stored_objects(js, names) == []


async def test_an_upload_over_the_limit_is_refused_naming_it_and_leaves_nothing(
    nc: NATS, js: JetStreamContext, names: Names
) -> None:
    async with running_api(nc, names, max_upload_bytes=len(JSONL) // 2) as client:
        answer = await upload(client, JSONL, "application/x-ndjson")  # no Content-Length
    assert answer.status_code == 413, answer.text
    assert (
        f"over the limit of {len(JSONL) // 2} bytes (INFERNO_MAX_UPLOAD_BYTES)"
        in (answer.json()["error"])
    )
    assert await stored_objects(js, names) == []


def experiment(ref: str, num_shards: int = 8) -> dict[str, Any]:
    return {
        "experiment_name": "big",
        "num_shards": num_shards,
        "dataset": {"ref": ref},
        "eval": {
            "prompt": "Q: {question}",
            "scorers": [{"name": "exact_match", "target": "answer"}],
        },
        "pipelines": [
            {"pipeline_name": "s", "pipeline_type": "sim", "model_config": {"model": "sim-s"}}
        ],
    }


async def test_creating_from_a_stored_dataset_reads_no_row(
    nc: NATS, js: JetStreamContext, names: Names
) -> None:
    async with running_api(nc, names) as client:
        assert (await upload(client, JSONL, "application/x-ndjson")).status_code == 200
        store = await js.object_store(names.data_store)
        for block in (await manifest_of(store, REF)).blocks:  # only the manifest is left
            await store.delete(block.name)
        answer = await client.post("/api/v1/experiments", json=experiment(REF))
        assert answer.status_code == 200, answer.text
        bad = experiment(REF)
        bad["eval"]["prompt"] = "{nope}"  # the manifest's columns are what is checked
        answer = await client.post("/api/v1/experiments", json=bad)
        assert answer.status_code == 400
        assert "uses {nope}, which the rows lack (they have: answer, id, question)" in answer.text
    command = decode_command((await js.get_msg(names.cmd_stream, seq=1)).data)
    assert (command.dataset_ref, command.row_count) == (REF, len(ROWS))


async def test_a_dataset_stored_whole_is_still_read_and_then_stored_in_blocks(
    nc: NATS, js: JetStreamContext, names: Names
) -> None:
    async with running_api(nc, names) as client:
        store = await js.object_store(names.data_store)
        await store.put(REF, JSONL)  # as datasets were stored before blocks
        answer = await client.post("/api/v1/experiments", json=experiment(REF))
        assert answer.status_code == 200, answer.text
    manifest = await manifest_of(store, REF)
    assert b"".join([await read_block(store, b) for b in manifest.blocks]) == JSONL


def blocks_read(source: str) -> float:
    labels = {"source": source}
    return REGISTRY.get_sample_value("inferno_executor_dataset_blocks_total", labels) or 0.0


async def test_an_executor_reads_only_the_blocks_of_its_shard(
    nc: NATS, js: JetStreamContext, names: Names, tmp_path: Any
) -> None:
    async with running_api(nc, names) as client:
        assert (await upload(client, JSONL, "application/x-ndjson")).status_code == 200
    manifest = await manifest_of(await js.object_store(names.data_store), REF)
    shard = range(9000, 9500)  # within one or two of the blocks
    covering = manifest.covering(shard)
    assert len(covering) < len(manifest.blocks)
    cache = DatasetCache(js, names, cache_dir=tmp_path)
    before = blocks_read("store")
    assert await cache.rows(REF, shard) == ROWS[9000:9500]
    assert blocks_read("store") - before == len(covering)
    assert await cache.rows(REF, shard) == ROWS[9000:9500]  # from memory: nothing read
    assert blocks_read("store") - before == len(covering)
    scattered = [19999, 0, 9100]
    assert await cache.rows(REF, scattered) == [ROWS[i] for i in scattered]
    restarted, on_disk = DatasetCache(js, names, cache_dir=tmp_path), blocks_read("disk")
    assert await restarted.rows(REF, shard) == ROWS[9000:9500]
    assert blocks_read("disk") - on_disk == len(covering)
