"""Datasets by reference: fetched from INFERNO_DATA once per executor, verified, kept in memory.

The reference is the SHA-256 of the canonical JSONL (`inferno.datasets.store.dataset_ref`), so
the bytes are checked against it wherever they come from: the object store, or the optional disk
cache that saves a restarted executor the download. Concurrent shards of one dataset share one
fetch. The few most recently used datasets stay in memory.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
from collections import OrderedDict
from pathlib import Path

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from nats.js.object_store import ObjectStore

from inferno.datasets.store import Row, dataset_ref, from_jsonl
from inferno.events.names import Names

_REF = re.compile(r"^sha256-[0-9a-f]{64}$")


class DatasetError(ValueError):
    """The dataset cannot be had as referenced (unknown ref, or content that does not match)."""


class DatasetCache:
    def __init__(
        self, js: JetStreamContext, names: Names, *, cache_dir: Path | None = None, keep: int = 4
    ) -> None:
        self._js, self._names, self._cache_dir, self._keep = js, names, cache_dir, keep
        self._store: ObjectStore | None = None
        self._rows: OrderedDict[str, list[Row]] = OrderedDict()
        self._loading: dict[str, asyncio.Task[list[Row]]] = {}

    async def rows(self, ref: str) -> list[Row]:
        """All rows of dataset `ref`. Raises `DatasetError` for a bad or unknown ref."""
        if ref in self._rows:
            self._rows.move_to_end(ref)
            return self._rows[ref]
        task = self._loading.get(ref)
        if task is None:
            task = self._loading[ref] = asyncio.create_task(self._load(ref))
            task.add_done_callback(lambda t: self._loaded(ref, t))
        # shielded: a shard cancelled while waiting must not cancel the fetch others wait for
        return await asyncio.shield(task)

    def _loaded(self, ref: str, task: asyncio.Task[list[Row]]) -> None:
        del self._loading[ref]
        if task.cancelled() or task.exception() is not None:  # (marks the error as seen)
            return
        self._rows[ref] = task.result()
        while len(self._rows) > self._keep:
            self._rows.popitem(last=False)

    async def _load(self, ref: str) -> list[Row]:
        if not _REF.match(ref):
            raise DatasetError(f"dataset_ref {ref!r} is not of the form sha256-<64 hex digits>")
        path = self._cache_dir / f"{ref}.jsonl" if self._cache_dir else None
        cached = await asyncio.to_thread(_read, path) if path is not None else None
        if cached is not None and dataset_ref(cached) == ref:
            return from_jsonl(cached)
        data = await self._fetch(ref)
        if dataset_ref(data) != ref:
            raise DatasetError(f"dataset {ref}: stored content has digest {dataset_ref(data)}")
        if path is not None:
            await asyncio.to_thread(_write, path, data)
        return from_jsonl(data)

    async def _fetch(self, ref: str) -> bytes:
        if self._store is None:
            self._store = await self._js.object_store(self._names.data_store)
        buffer = io.BytesIO()  # written chunk by chunk: `.data` would be concatenated, O(n²)
        try:
            await self._store.get(ref, writeinto=buffer)
        except NotFoundError:
            raise DatasetError(f"dataset {ref} is not in {self._names.data_store}") from None
        return buffer.getvalue()


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
