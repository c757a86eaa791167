"""Dataset files as people have them: JSONL, CSV or Parquet, read into rows.

Pure (bytes in, rows out), shared by the api (uploads) and the CLI (`dataset.path`), so both
accept the same files and say the same thing about a bad one. The rows are then stored as
canonical JSONL (`inferno.datasets.store`), so the same rows get the same `dataset_ref`
whatever file they came in. CSV values stay strings; JSONL and Parquet keep their types
(Parquet values JSON cannot hold become what msgspec makes of them: timestamps ISO 8601 text,
decimals text, bytes base64).
"""

from __future__ import annotations

import csv
import io
from typing import Any

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

_row = msgspec.json.Decoder(dict[str, Any])


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
    if fmt == "parquet":
        rows = _parquet_rows(data)
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise DatasetFileError(f"is not UTF-8 text: {error}") from None
        rows = _csv_rows(text) if fmt == "csv" else _jsonl_rows(text)
    if not rows:
        raise DatasetFileError("has no rows")
    return rows


def _jsonl_rows(text: str) -> list[Row]:
    rows = []
    for number, line in enumerate(text.split("\n"), 1):  # not splitlines: JSON may hold U+2028
        if not line.strip():
            continue
        try:
            row = msgspec.json.decode(line)
        except msgspec.DecodeError as error:
            raise DatasetFileError(f"line {number}: invalid JSON: {error}") from None
        if not isinstance(row, dict):
            raise DatasetFileError(f"line {number}: a row must be a JSON object")
        rows.append(row)
    return rows


def _csv_rows(text: str) -> list[Row]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames:
        raise DatasetFileError("has no header row")
    rows = []
    try:
        for row in reader:
            if None in row or any(value is None for value in row.values()):
                raise DatasetFileError(
                    f"line {reader.line_num}: expected {len(reader.fieldnames)}"
                    " columns as in the header"
                )
            rows.append(dict(row))
    except csv.Error as error:
        raise DatasetFileError(f"line {reader.line_num}: {error}") from None
    return rows


def _parquet_rows(data: bytes) -> list[Row]:
    import pyarrow as pa  # here: a second to import, and only Parquet needs it
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as error:
        raise DatasetFileError(f"is not a readable Parquet file: {error}") from None
    # through JSON once, so every value is one JSON can hold (as stored, and as the api sends)
    return msgspec.json.decode(msgspec.json.encode(table.to_pylist()))
