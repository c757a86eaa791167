"""Datasets stored whole (the form before blocks) by reference from INFERNO_DATA: verified,
fetched once, cached in memory and on disk. Blocks: test_dataset_blocks.py."""

from __future__ import annotations

import asyncio

import pytest
from nats.js import JetStreamContext

from inferno.datasets.store import dataset_ref, to_jsonl
from inferno.events.names import Names
from inferno.executor.datasets import DatasetCache, DatasetError
from inferno.jetstream import ensure_log

ROWS = [{"id": i, "text": f"row {i}"} for i in range(5)]
ALL = range(len(ROWS))


@pytest.fixture
async def store(js: JetStreamContext, names: Names):
    await ensure_log(js, names)
    return await js.object_store(names.data_store)


async def test_rows_come_from_memory_then_disk_once_fetched(js, names, store, tmp_path):
    data = to_jsonl(ROWS)
    ref = dataset_ref(data)
    await store.put(ref, data)
    cache = DatasetCache(js, names, cache_dir=tmp_path)
    first, second = await asyncio.gather(cache.rows(ref, ALL), cache.rows(ref, ALL))
    assert first == ROWS
    assert second == first  # one fetch for both
    assert (tmp_path / f"{ref}.jsonl").read_bytes() == data

    await store.delete(ref)
    assert await cache.rows(ref, ALL) == first  # memory
    assert await DatasetCache(js, names, cache_dir=tmp_path).rows(ref, ALL) == ROWS  # disk
    with pytest.raises(DatasetError, match="is not in"):
        await DatasetCache(js, names).rows(ref, ALL)


async def test_a_corrupt_disk_copy_is_fetched_again(js, names, store, tmp_path):
    data = to_jsonl(ROWS)
    ref = dataset_ref(data)
    await store.put(ref, data)
    (tmp_path / f"{ref}.jsonl").write_bytes(b'{"id": "tampered"}\n')
    assert await DatasetCache(js, names, cache_dir=tmp_path).rows(ref, ALL) == ROWS
    assert (tmp_path / f"{ref}.jsonl").read_bytes() == data


async def test_content_that_does_not_match_its_ref_is_refused(js, names, store):
    ref = dataset_ref(to_jsonl(ROWS))
    await store.put(ref, to_jsonl(ROWS[:2]))
    cache = DatasetCache(js, names)
    with pytest.raises(DatasetError, match="digest"):
        await cache.rows(ref, ALL)
    with pytest.raises(DatasetError, match="sha256-<64 hex digits>"):
        await cache.rows("../../etc/passwd", ALL)
