"""A stored dataset in blocks: its canonical JSONL cut into objects of whole rows, and a manifest.

Creating an experiment needs only the row count and the columns, and an executor only the rows
of its shard, so neither should read the whole dataset: the manifest (`manifests/<ref>`) says how
many rows there are, their columns, and which block (`blocks/<upload>/<n>`) holds which rows.
The manifest is written last, so a dataset is there whole or not at all. Blocks are named by
the upload that wrote them, not by content, so an upload that fails can delete what it wrote
without touching another upload's blocks. Pure: rows in, block bytes and a manifest out.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Sequence

import msgspec

from inferno.datasets.store import Row

BLOCK_BYTES = 256 << 10
"""A block closes at the first row that takes it to this size: shards read at this grain, and
an upload holds about this much (times its few blocks in flight) of rows at a time."""

_encode = msgspec.json.Encoder(order="sorted")


class Block(msgspec.Struct, kw_only=True, frozen=True):
    name: str
    """The object in INFERNO_DATA."""
    first_row: int
    rows: int
    sha256: str
    """Of the block's bytes, hex: checked by whoever reads it."""


class Manifest(msgspec.Struct, kw_only=True, frozen=True):
    """A stored dataset: written after all its blocks, so one that exists is complete."""

    v: int = 1
    dataset_ref: str
    row_count: int
    size: int
    """Bytes of the canonical JSONL (all blocks together)."""
    columns: list[str]
    """The first row's fields, which stand for all rows' (as the api checks templates)."""
    blocks: list[Block]

    def covering(self, indices: Iterable[int]) -> list[Block]:
        """The blocks holding the rows at `indices` (in block order, each once)."""
        starts = [block.first_row for block in self.blocks]
        chosen: dict[int, None] = {}
        for index in indices:
            if not 0 <= index < self.row_count:
                raise IndexError(f"row {index} is outside the dataset's {self.row_count} rows")
            chosen[bisect.bisect_right(starts, index) - 1] = None
        return [self.blocks[i] for i in sorted(chosen)]


manifest_decoder = msgspec.json.Decoder(Manifest)


def manifest_name(ref: str) -> str:
    return f"manifests/{ref}"


def block_name(upload_id: str, index: int) -> str:
    return f"blocks/{upload_id}/{index:06d}"


class BlockWriter:
    """Rows in, finished blocks out, digests kept as it goes: the dataset's digest is the
    SHA-256 of all blocks' bytes in order, i.e. of the canonical JSONL (`dataset_ref`), so a
    dataset stored in blocks has the same ref as the same rows stored whole."""

    def __init__(self, upload_id: str, block_bytes: int = BLOCK_BYTES) -> None:
        self._upload_id, self._block_bytes = upload_id, block_bytes
        self._digest = hashlib.sha256()
        self._buffer = bytearray()
        self._buffer_rows = 0
        self._blocks: list[Block] = []
        self._columns: list[str] | None = None
        self.row_count = 0
        self.size = 0

    def add(self, row: Row) -> tuple[Block, bytes] | None:
        """Take one row; a block that this row completed, with its bytes, or None."""
        if self._columns is None:
            self._columns = sorted(row)
        line = _encode.encode(row)
        self._buffer += line
        self._buffer += b"\n"
        self._buffer_rows += 1
        self.row_count += 1
        return self._cut() if len(self._buffer) >= self._block_bytes else None

    def finish(self) -> tuple[Block, bytes] | None:
        """The last, partial block, if any rows are left."""
        return self._cut() if self._buffer_rows else None

    def manifest(self) -> Manifest:
        """After `finish`: what describes the dataset written so far."""
        return Manifest(
            dataset_ref="sha256-" + self._digest.hexdigest(),
            row_count=self.row_count,
            size=self.size,
            columns=self._columns or [],
            blocks=list(self._blocks),
        )

    def _cut(self) -> tuple[Block, bytes]:
        data = bytes(self._buffer)
        block = Block(
            name=block_name(self._upload_id, len(self._blocks)),
            first_row=self.row_count - self._buffer_rows,
            rows=self._buffer_rows,
            sha256=hashlib.sha256(data).hexdigest(),
        )
        self._digest.update(data)
        self.size += len(data)
        self._blocks.append(block)
        self._buffer.clear()
        self._buffer_rows = 0
        return block, data


def pick(blocks: Sequence[tuple[Block, list[Row]]], indices: Iterable[int]) -> list[Row]:
    """The rows at `indices`, in that order, from the decoded blocks that cover them."""
    starts = [block.first_row for block, _ in blocks]
    picked = []
    for index in indices:
        block, rows = blocks[bisect.bisect_right(starts, index) - 1]
        picked.append(rows[index - block.first_row])
    return picked
