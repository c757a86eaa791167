"""Datasets in blocks (pure): the same ref as the rows stored whole, blocks of whole rows cut at
their size, any rows found by index; files parsed as a stream."""

from __future__ import annotations

import csv as csv_module
import io

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from inferno.datasets.blocks import BlockWriter, manifest_decoder, pick
from inferno.datasets.files import MAX_ROW_BYTES, DatasetFileError, iter_rows, row_feed
from inferno.datasets.store import dataset_ref, from_jsonl, to_jsonl

ROWS = [{"id": i, "text": f"row {i} " + "x" * (i % 7)} for i in range(500)]


def write(rows: list[dict[str, object]], block_bytes: int) -> tuple[BlockWriter, list[bytes]]:
    writer = BlockWriter("up1", block_bytes)
    datas = [done[1] for row in rows if (done := writer.add(row)) is not None]
    if (last := writer.finish()) is not None:
        datas.append(last[1])
    return writer, datas


def test_blocks_hold_whole_rows_and_the_ref_is_the_whole_jsonl_digest() -> None:
    writer, datas = write(ROWS, block_bytes=1000)
    manifest = writer.manifest()
    assert manifest.dataset_ref == dataset_ref(to_jsonl(ROWS))
    assert b"".join(datas) == to_jsonl(ROWS)
    assert (manifest.row_count, manifest.size) == (500, len(to_jsonl(ROWS)))
    assert manifest.columns == ["id", "text"]
    assert len(manifest.blocks) == len(datas) > 10
    for block, data in zip(manifest.blocks, datas, strict=True):
        rows = from_jsonl(data)
        assert rows == ROWS[block.first_row : block.first_row + block.rows]
        assert len(data) - len(data.splitlines()[-1]) - 1 < 1000  # closed by its last row
    assert manifest.blocks[0].name == "blocks/up1/000000"
    assert manifest_decoder.decode(msgspec.json.encode(manifest)) == manifest


def test_rows_by_index_come_from_the_blocks_that_hold_them() -> None:
    writer, datas = write(ROWS, block_bytes=1000)
    manifest = writer.manifest()
    shard = range(130, 170)
    covering = manifest.covering(shard)
    assert 1 <= len(covering) < len(manifest.blocks) / 4
    decoded = [(b, from_jsonl(datas[manifest.blocks.index(b)])) for b in covering]
    assert pick(decoded, shard) == ROWS[130:170]
    scattered = [499, 3, 250, 3]  # any order, repeats: what a seeded shuffle will ask for
    decoded = [
        (b, from_jsonl(datas[manifest.blocks.index(b)])) for b in manifest.covering(scattered)
    ]
    assert pick(decoded, scattered) == [ROWS[i] for i in scattered]
    with pytest.raises(IndexError, match="row 500 is outside"):
        manifest.covering([500])


def test_files_are_read_as_a_stream_with_the_same_rows_in_every_format() -> None:
    rows = [{"q": f"{i}+{i}", "a": str(2 * i)} for i in range(3000)]
    jsonl = b"\xef\xbb\xbf" + to_jsonl(rows) + b"\n\n"
    csv = "q,a\n" + "".join(f"{r['q']},{r['a']}\n" for r in rows)
    parquet = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), parquet, row_group_size=700)
    for data, fmt in ((jsonl, "jsonl"), (csv.encode(), "csv"), (parquet.getvalue(), "parquet")):
        assert list(iter_rows(io.BytesIO(data), fmt)) == rows, fmt


@pytest.mark.parametrize(
    ("data", "fmt", "error"),
    [
        (b'{"a": 1}\n{"a": \n', "jsonl", "line 2: invalid JSON"),
        (b'{"a": 1}\n\n[1]\n', "jsonl", "line 3: a row must be a JSON object"),
        (b"\n  \n", "jsonl", "has no rows"),
        (b'{"a": "' + b"x" * MAX_ROW_BYTES + b'"}\n', "jsonl", "line 1: over 8388608 bytes"),
        (b"a,b\n1,2\n\xff,3\n", "csv", "is not UTF-8 text"),
        (b"a,b\n1,2\n3\n", "csv", "line 3: expected 2 columns"),
        (b"PAR1 not really", "parquet", "is not a readable Parquet file"),
    ],
)
def test_a_bad_file_names_where(data: bytes, fmt: str, error: str) -> None:
    with pytest.raises(DatasetFileError, match=error):
        list(iter_rows(io.BytesIO(data), fmt))


@pytest.mark.parametrize("piece", [1, 7, 64, 4096])
def test_a_file_fed_in_pieces_of_any_size_gives_the_same_rows(piece: int) -> None:
    rows = [{"q": f'é {i}\nline two, "quoted"', "a": str(i)} for i in range(200)]
    csv = io.StringIO(newline="")
    writer = csv_module.DictWriter(csv, ["q", "a"])
    writer.writeheader()
    writer.writerows(rows)
    for data, fmt in ((csv.getvalue().encode(), "csv"), (to_jsonl(rows), "jsonl")):
        feed = row_feed(fmt)
        got = [r for i in range(0, len(data), piece) for r in feed.feed(data[i : i + piece])]
        assert got + feed.end() == rows, fmt
