"""Dataset files as people have them: JSONL, CSV or Parquet, read into rows.

Pure (a binary stream in, rows out), shared by the api (uploads) and the CLI (`dataset.path`),
so both accept the same files and say the same thing about a bad one. The rows are then stored as
canonical JSONL (`inferno.datasets.store`), so the same rows get the same `dataset_ref`
whatever file they came in. CSV values stay strings; JSONL and Parquet keep their types
(Parquet values JSON cannot hold become what msgspec makes of them: timestamps ISO 8601 text,
decimals text, bytes base64).
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator
from typing import Any, BinaryIO

import msgspec

from inferno.datasets.store import Row

FORMATS: tuple[str, ...] = ("jsonl", "csv", "parquet")
SUFFIXES: dict[str, str] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
}
CONTENT_TYPES: dict[str, str] = {
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
    "application/jsonlines": "jsonl",
    "application/x-jsonlines": "jsonl",
    "text/csv": "csv",
    "application/vnd.apache.parquet": "parquet",
    "application/x-parquet": "parquet",
}

MAX_ROW_BYTES = 8 << 20
"""The longest JSONL line: what an upload holds of a row before it knows the row is whole."""
PARQUET_BATCH_ROWS = 1024

_row = msgspec.json.Decoder(dict[str, Any])
_rows = msgspec.json.Decoder(list[dict[str, Any]])


class DatasetFileError(ValueError):
    """A file that holds no usable rows; the message says where (`line 3: ...`)."""


def format_of(filename: str | None = None, content_type: str | None = None) -> str | None:
    """The format a file name's suffix or a media type names; None when neither does."""
    if filename:
        suffix = "." + filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
        if suffix in SUFFIXES:
            return SUFFIXES[suffix]
    if content_type:
        return CONTENT_TYPES.get(content_type.split(";", 1)[0].strip().lower())
    return None


def parse_rows(data: bytes, fmt: str) -> list[Row]:
    """The rows of a file in format `fmt` (one of FORMATS); at least one, or an error."""
    return list(iter_rows(io.BytesIO(data), fmt))


def iter_rows(source: BinaryIO, fmt: str) -> Iterator[Row]:
    """The rows of a file read as a stream: one line (JSONL, CSV) or one batch of rows (Parquet,
    whose `source` must be seekable: its index is at the end) held at a time. Raises
    `DatasetFileError` at the first bad row, or at the end if there was none."""
    if fmt == "parquet":
        rows = _parquet_rows(source)
    else:
        rows = _csv_rows(source) if fmt == "csv" else _jsonl_rows(source)
    count = 0
    for row in rows:
        count += 1
        yield row
    if not count:
        raise DatasetFileError("has no rows")


def _jsonl_rows(source: BinaryIO) -> Iterator[Row]:
    number = 0
    while line := source.readline(MAX_ROW_BYTES + 1):  # lines end at b"\n" only: JSON may
        number += 1  # hold U+2028, which str.splitlines would split at
        if len(line) > MAX_ROW_BYTES and not line.endswith(b"\n"):
            raise DatasetFileError(
                f"line {number}: over {MAX_ROW_BYTES} bytes, the most a row may be"
            )
        if number == 1 and line.startswith(codecs.BOM_UTF8):
            line = line[len(codecs.BOM_UTF8) :]
        if not line.strip():
            continue
        try:
            row = _row.decode(line)
        except msgspec.ValidationError:
            raise DatasetFileError(f"line {number}: a row must be a JSON object") from None
        except msgspec.DecodeError as error:
            raise DatasetFileError(f"line {number}: invalid JSON: {error}") from None
        yield row


def _csv_rows(source: BinaryIO) -> Iterator[Row]:
    text = io.TextIOWrapper(source, encoding="utf-8-sig", newline="")
    reader = csv.DictReader(text)
    try:
        if not reader.fieldnames:
            raise DatasetFileError("has no header row")
        for row in reader:
            if None in row or any(value is None for value in row.values()):
                raise DatasetFileError(
                    f"line {reader.line_num}: expected {len(reader.fieldnames)}"
                    " columns as in the header"
                )
            yield row
    except csv.Error as error:
        raise DatasetFileError(f"line {reader.line_num}: {error}") from None
    except UnicodeDecodeError as error:
        raise DatasetFileError(f"is not UTF-8 text: {error}") from None
    finally:
        text.detach()  # the source is the caller's to close


def _parquet_rows(source: BinaryIO) -> Iterator[Row]:
    import pyarrow as pa  # here: a second to import, and only Parquet needs it
    import pyarrow.parquet as pq

    try:
        # pre_buffer off and a read buffer: pages are read as batches need them, not a whole
        # row group at once (a writer's default row group is a million rows)
        parquet = pq.ParquetFile(source, buffer_size=1 << 20, pre_buffer=False)
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            # through JSON once, so every value is one JSON can hold (as stored, and as the
            # api sends)
            yield from _rows.decode(msgspec.json.encode(batch.to_pylist()))
    except (pa.ArrowException, OSError) as error:
        raise DatasetFileError(f"is not a readable Parquet file: {error}") from None
