"""Datasets are stored once, content-addressed: the same rows always get the same reference."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any

import msgspec

Row = dict[str, Any]
REF_PATTERN = re.compile(r"^sha256-[0-9a-f]{64}$")
"""What `dataset_ref` names look like."""
_rows_decoder = msgspec.json.Decoder(Row)


def to_jsonl(rows: Iterable[Row]) -> bytes:
    """Canonical JSONL: one object per line, keys sorted, so equal rows give equal bytes."""
    return b"".join(msgspec.json.encode(row, order="sorted") + b"\n" for row in rows)


def from_jsonl(data: bytes) -> list[Row]:
    return [_rows_decoder.decode(line) for line in data.splitlines() if line.strip()]


def dataset_ref(jsonl: bytes) -> str:
    """The object name in INFERNO_DATA: `sha256-<hex>` of the canonical JSONL."""
    return "sha256-" + hashlib.sha256(jsonl).hexdigest()
