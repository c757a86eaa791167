"""Datasets in the INFERNO_DATA object store: blocks and manifests written, read and checked.

The I/O edge of `inferno.datasets.blocks`, shared by the api (writes, manifests) and executors
(the blocks of a shard). A dataset stored before blocks existed is one object named by its ref
holding all its canonical JSONL; `read_whole` still reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
from collections import deque

import msgspec
from nats.js.api import ObjectMeta, ObjectMetaOptions
from nats.js.errors import NotFoundError
from nats.js.object_store import ObjectStore

from inferno.datasets.blocks import Block, Manifest, manifest_decoder, manifest_name

BLOCKS_IN_FLIGHT = 4
"""Blocks an upload has sent and not yet had stored: they overlap parsing with writing."""
CHUNK_BYTES = 512 << 10
"""One object-store message holds a whole block of BLOCK_BYTES and its last row, mostly
(the store's default, 128 KiB, would make three messages, each a write to disk)."""


class StoredDatasetError(ValueError):
    """A stored block or dataset whose content does not match its digest."""


async def read_manifest(store: ObjectStore, ref: str) -> Manifest | None:
    """The manifest of dataset `ref`; None when it is not stored in blocks."""
    try:
        data = (await store.get(manifest_name(ref))).data or b""
    except NotFoundError:
        return None
    manifest = manifest_decoder.decode(data)
    if manifest.dataset_ref != ref:
        raise StoredDatasetError(f"{manifest_name(ref)} describes {manifest.dataset_ref}")
    return manifest


async def read_block(store: ObjectStore, block: Block) -> bytes:
    """A block's bytes, checked against the digest its manifest gives."""
    try:
        data = (await store.get(block.name)).data or b""
    except NotFoundError:
        raise StoredDatasetError(f"block {block.name} is missing from the store") from None
    if hashlib.sha256(data).hexdigest() != block.sha256:
        raise StoredDatasetError(f"block {block.name}: content does not match its digest")
    return data


async def read_whole(store: ObjectStore, ref: str) -> bytes | None:
    """A dataset stored as one object (the form before blocks); None when there is none."""
    buffer = io.BytesIO()  # written chunk by chunk: `.data` would be concatenated, O(n²)
    try:
        await store.get(ref, writeinto=buffer)
    except NotFoundError:
        return None
    return buffer.getvalue()


class BlockUploader:
    """Stores an upload's blocks as they come, a few at a time, and then its manifest; or, if
    the upload fails, deletes what it stored, so nothing of it remains to be found."""

    def __init__(self, store: ObjectStore) -> None:
        self._store = store
        self._in_flight: deque[asyncio.Task[object]] = deque()
        self._stored: list[str] = []

    async def put(self, block: Block, data: bytes) -> None:
        """Send a block; returns once fewer than BLOCKS_IN_FLIGHT are still being stored."""
        self._stored.append(block.name)  # before the put: an abort deletes it either way
        meta = ObjectMeta(options=ObjectMetaOptions(max_chunk_size=CHUNK_BYTES))
        self._in_flight.append(asyncio.ensure_future(self._store.put(block.name, data, meta)))
        while len(self._in_flight) >= BLOCKS_IN_FLIGHT:
            await self._in_flight.popleft()

    async def commit(self, manifest: Manifest) -> None:
        """Once every block is stored: the manifest, unless those rows are stored already (then
        this upload's blocks go, and the dataset already stored stays as it is)."""
        while self._in_flight:
            await self._in_flight.popleft()
        name = manifest_name(manifest.dataset_ref)
        try:
            await self._store.get_info(name)
        except NotFoundError:
            await self._store.put(name, msgspec.json.encode(manifest))
            return
        await self._delete_stored()

    async def abort(self) -> None:
        # waited for, not cancelled: a put cut short leaves chunks that no name can delete
        await asyncio.gather(*self._in_flight, return_exceptions=True)
        self._in_flight.clear()
        await self._delete_stored()

    async def _delete_stored(self) -> None:
        for name in self._stored:
            with contextlib.suppress(NotFoundError):  # (a put that failed stored nothing)
                await self._store.delete(name)
        self._stored.clear()
