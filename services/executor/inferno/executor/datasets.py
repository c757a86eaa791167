"""Datasets by reference: only the blocks that hold a shard's rows, fetched once, verified, kept.

A dataset in INFERNO_DATA has a manifest saying which block holds which rows
(`inferno.datasets.blocks`), so a shard reads only the blocks covering its rows, each checked
against the digest the manifest gives, from the object store or the optional disk cache that
saves a restarted executor the download. A dataset stored before blocks existed is one object,
read whole and checked against its ref. Concurrent shards share one fetch of each thing; the
most recently used manifests, blocks and whole datasets stay in memory.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Generic, TypeVar

from nats.js import JetStreamContext
from nats.js.object_store import ObjectStore

from inferno.datasets.blocks import Block, Manifest, pick
from inferno.datasets.objects import StoredDatasetError, read_block, read_manifest, read_whole
from inferno.datasets.store import REF_PATTERN, Row, dataset_ref, from_jsonl
from inferno.events.names import Names
from inferno.executor import metrics

T = TypeVar("T")


class DatasetError(ValueError):
    """The dataset cannot be had as referenced (unknown ref, or content that does not match)."""


class _Loads(Generic[T]):
    """Values by key, each loaded once however many ask at the same time; the `keep` most
    recently used stay."""

    def __init__(self, keep: int) -> None:
        self._keep = keep
        self._done: OrderedDict[str, T] = OrderedDict()
        self._loading: dict[str, asyncio.Task[T]] = {}

    async def get(self, key: str, load: Callable[[], Awaitable[T]]) -> T:
        if key in self._done:
            self._done.move_to_end(key)
            return self._done[key]
        task = self._loading.get(key)
        if task is None:
            task = self._loading[key] = asyncio.ensure_future(load())
            task.add_done_callback(lambda t: self._loaded(key, t))
        # shielded: a shard cancelled while waiting must not cancel the fetch others wait for
        return await asyncio.shield(task)

    def _loaded(self, key: str, task: asyncio.Task[T]) -> None:
        del self._loading[key]
        if task.cancelled() or task.exception() is not None:  # (marks the error as seen)
            return
        self._done[key] = task.result()
        while len(self._done) > self._keep:
            self._done.popitem(last=False)


class DatasetCache:
    def __init__(
        self,
        js: JetStreamContext,
        names: Names,
        *,
        cache_dir: Path | None = None,
        keep: int = 4,
        keep_blocks: int = 128,
    ) -> None:
        self._js, self._names, self._cache_dir = js, names, cache_dir
        self._store: ObjectStore | None = None
        self._manifests: _Loads[Manifest | None] = _Loads(16)
        self._blocks: _Loads[list[Row]] = _Loads(keep_blocks)  # 128 × 256 KiB of JSONL
        self._whole: _Loads[list[Row]] = _Loads(keep)

    async def rows(self, ref: str, indices: Sequence[int]) -> list[Row]:
        """The rows of dataset `ref` at `indices` (a shard's `range`, or any list), in that
        order. Raises `DatasetError` for a bad or unknown ref, or an index it lacks."""
        if not REF_PATTERN.match(ref):
            raise DatasetError(f"dataset_ref {ref!r} is not of the form sha256-<64 hex digits>")
        manifest = await self._manifests.get(ref, lambda: self._manifest(ref))
        if manifest is None:  # stored whole
            rows = await self._whole.get(ref, lambda: self._load_whole(ref))
            _check(ref, len(rows), indices)
            return [rows[i] for i in indices]
        _check(ref, manifest.row_count, indices)
        blocks = manifest.covering(indices)
        decoded = await asyncio.gather(
            *(self._blocks.get(b.sha256, functools.partial(self._load_block, b)) for b in blocks)
        )
        return pick(list(zip(blocks, decoded, strict=True)), indices)

    async def _object_store(self) -> ObjectStore:
        if self._store is None:
            self._store = await self._js.object_store(self._names.data_store)
        return self._store

    async def _manifest(self, ref: str) -> Manifest | None:
        try:
            return await read_manifest(await self._object_store(), ref)
        except StoredDatasetError as error:
            raise DatasetError(f"dataset {ref}: {error}") from None

    async def _load_block(self, block: Block) -> list[Row]:
        path = self._cache_dir / "blocks" / f"{block.sha256}.jsonl" if self._cache_dir else None
        cached = await asyncio.to_thread(_read, path) if path is not None else None
        if cached is not None and hashlib.sha256(cached).hexdigest() == block.sha256:
            metrics.dataset_block_read("disk")
            return from_jsonl(cached)
        try:
            data = await read_block(await self._object_store(), block)
        except StoredDatasetError as error:
            raise DatasetError(str(error)) from None
        metrics.dataset_block_read("store")
        if path is not None:
            await asyncio.to_thread(_write, path, data)
        return from_jsonl(data)

    async def _load_whole(self, ref: str) -> list[Row]:
        path = self._cache_dir / f"{ref}.jsonl" if self._cache_dir else None
        cached = await asyncio.to_thread(_read, path) if path is not None else None
        if cached is not None and dataset_ref(cached) == ref:
            return from_jsonl(cached)
        data = await read_whole(await self._object_store(), ref)
        if data is None:
            raise DatasetError(f"dataset {ref} is not in {self._names.data_store}")
        if dataset_ref(data) != ref:
            raise DatasetError(f"dataset {ref}: stored content has digest {dataset_ref(data)}")
        if path is not None:
            await asyncio.to_thread(_write, path, data)
        return from_jsonl(data)


def _check(ref: str, row_count: int, indices: Sequence[int]) -> None:
    if indices and (min(indices) < 0 or max(indices) >= row_count):
        raise DatasetError(
            f"dataset {ref} has {row_count} rows,"
            f" the shard needs rows {min(indices)}..{max(indices)}"
        )


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _write(path: Path, data: bytes) -> None:
    """Atomically, so a crash never leaves a half-written file under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)
