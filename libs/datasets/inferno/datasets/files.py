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
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterator
from typing import IO, Any

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
READ_BYTES = 1 << 20
"""How much of a file `iter_rows` reads at a time."""

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


def iter_rows(source: IO[bytes], fmt: str) -> Iterator[Row]:
    """The rows of a file read as a stream: a piece at a time (JSONL, CSV), or a batch of rows
    at a time (Parquet, whose `source` must be seekable: its index is at the end). Raises
    `DatasetFileError` at the first bad row, or at the end if there was none."""
    if fmt == "parquet":
        yield from _parquet_rows(source)
        return
    feed = row_feed(fmt)
    while piece := source.read(READ_BYTES):
        yield from feed.feed(piece)
    yield from feed.end()


class RowFeed(ABC):
    """A JSONL or CSV file's rows from its bytes as they come (an upload's body, piece by
    piece): `feed` gives the rows a piece completed, `end` the last ones. Between pieces it
    holds only the unfinished row, at most MAX_ROW_BYTES of it."""

    def __init__(self) -> None:
        self.count = 0

    @abstractmethod
    def feed(self, piece: bytes) -> list[Row]: ...

    @abstractmethod
    def end(self) -> list[Row]: ...

    def _counted(self, rows: list[Row], last: bool) -> list[Row]:
        self.count += len(rows)
        if last and not self.count:
            raise DatasetFileError("has no rows")
        return rows


def row_feed(fmt: str) -> RowFeed:
    return _CsvFeed() if fmt == "csv" else _JsonlFeed()


class _JsonlFeed(RowFeed):
    def __init__(self) -> None:
        super().__init__()
        self._left = b""
        self._number = 0

    def feed(self, piece: bytes) -> list[Row]:
        data = self._left + piece
        cut = data.rfind(b"\n") + 1  # lines end at b"\n" only: JSON may hold U+2028, which
        self._left = data[cut:]  # str.splitlines would split at
        if len(self._left) > MAX_ROW_BYTES:
            self._too_long(self._number + data.count(b"\n", 0, cut) + 1)
        return self._counted(self._rows(data[:cut].split(b"\n")[:-1]), last=False)

    def end(self) -> list[Row]:
        rows = self._rows([self._left]) if self._left else []
        self._left = b""
        return self._counted(rows, last=True)

    def _rows(self, lines: list[bytes]) -> list[Row]:
        rows = []
        for line in lines:
            self._number += 1
            if len(line) > MAX_ROW_BYTES:
                self._too_long(self._number)
            if self._number == 1 and line.startswith(codecs.BOM_UTF8):
                line = line[len(codecs.BOM_UTF8) :]
            if not line.strip():
                continue
            try:
                rows.append(_row.decode(line))
            except msgspec.ValidationError:
                raise DatasetFileError(
                    f"line {self._number}: a row must be a JSON object"
                ) from None
            except msgspec.DecodeError as error:
                raise DatasetFileError(f"line {self._number}: invalid JSON: {error}") from None
        return rows

    @staticmethod
    def _too_long(number: int) -> None:
        raise DatasetFileError(f"line {number}: over {MAX_ROW_BYTES} bytes, the most a row may be")


class _Lines:
    """What the csv reader pulls lines from: refilled as pieces come. The reader stops when it
    runs dry and goes on when asked again, so it is only ever given whole records."""

    def __init__(self) -> None:
        self._lines: deque[str] = deque()

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self._lines:
            return self._lines.popleft()
        raise StopIteration

    def extend(self, text: str) -> None:
        *whole, last = text.split("\n")
        self._lines.extend(line + "\n" for line in whole)
        if last:
            self._lines.append(last)


class _CsvFeed(RowFeed):
    def __init__(self) -> None:
        super().__init__()
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self._left = ""
        self._lines = _Lines()
        self._reader = csv.DictReader(self._lines)

    def feed(self, piece: bytes) -> list[Row]:
        return self._counted(self._take(piece, final=False), last=False)

    def end(self) -> list[Row]:
        rows = self._take(b"", final=True)
        if self._reader.fieldnames is None:
            raise DatasetFileError("has no header row")
        return self._counted(rows, last=True)

    def _take(self, piece: bytes, final: bool) -> list[Row]:
        try:
            text = self._left + self._decoder.decode(piece, final)
        except UnicodeDecodeError as error:
            raise DatasetFileError(f"is not UTF-8 text: {error}") from None
        cut = len(text) if final else _records_end(text)
        self._left = text[cut:]
        if len(self._left) > MAX_ROW_BYTES:
            raise DatasetFileError(
                f"line {self._reader.line_num + 1}: a record over {MAX_ROW_BYTES} bytes"
                " (or a quote that is never closed)"
            )
        self._lines.extend(text[:cut])
        reader, rows = self._reader, list[Row]()
        try:
            if reader.fieldnames is None:  # the header is not whole yet
                return rows
            for row in reader:
                if None in row or any(value is None for value in row.values()):
                    raise DatasetFileError(
                        f"line {reader.line_num}: expected {len(reader.fieldnames)}"
                        " columns as in the header"
                    )
                rows.append(row)
        except csv.Error as error:
            raise DatasetFileError(f"line {reader.line_num}: {error}") from None
        return rows


def _records_end(text: str) -> int:
    """Where the last whole CSV record in `text` ends: after the last newline outside quotes.
    `text` starts at a record, and quotes inside a quoted field are doubled, so a newline is
    outside quotes when an even number of quotes comes before it."""
    end = text.rfind("\n")
    odd = text.count('"', 0, end) % 2 if end >= 0 else 0
    while odd and end >= 0:
        before = text.rfind("\n", 0, end)
        odd ^= text.count('"', max(before, 0), end) % 2
        end = before
    return end + 1


def _parquet_rows(source: IO[bytes]) -> Iterator[Row]:
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
