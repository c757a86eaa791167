"""Datasets in INFERNO_DATA: stored once under their content digest, read back to validate.

Uploads come as JSON rows or as a JSONL, CSV or Parquet file; either way the rows are stored as
canonical JSONL, so the same rows get the same `dataset_ref` whatever file they came in.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import Any

import structlog
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from nats.js.errors import NotFoundError
from nats.js.object_store import ObjectStore
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from inferno.api.deps import Gateway
from inferno.api.errors import ApiError, bad_field
from inferno.api.schemas import RowsBody
from inferno.datasets.files import CONTENT_TYPES, DatasetFileError, format_of, parse_rows
from inferno.datasets.store import dataset_ref, from_jsonl, to_jsonl

_log = structlog.get_logger(__name__)


async def store_rows(gw: Gateway, rows: list[dict[str, Any]]) -> str:
    """Put the rows as canonical JSONL unless that exact content is already stored; its ref."""
    jsonl = to_jsonl(rows)
    ref = dataset_ref(jsonl)
    store = await gw.js.object_store(gw.names.data_store)
    try:
        await store.get_info(ref)
    except NotFoundError:
        await store.put(ref, jsonl)
    return ref


async def load_rows(gw: Gateway, ref: str, field: str) -> list[dict[str, Any]]:
    """The rows stored under `ref`; a 400 naming `field` when there are none."""
    store = await gw.js.object_store(gw.names.data_store)
    try:
        rows = from_jsonl((await store.get(ref)).data or b"")
    except NotFoundError:
        raise bad_field(
            field, f"no dataset {ref!r} is stored; upload it with POST /datasets"
        ) from None
    if not rows:
        raise bad_field(field, f"dataset {ref!r} has no rows")
    return rows


async def rows_from_request(request: Request, fmt: str | None) -> list[dict[str, Any]]:
    """The rows of an upload: JSON `{"rows": [...]}`, a multipart form's `file`, or a raw body
    in JSONL, CSV or Parquet named by its Content-Type (or by `fmt`, the `format` query)."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media == "multipart/form-data":
        form = await request.form()
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise bad_field("file", "a multipart upload needs its file in the part named 'file'")
        kind = fmt or format_of(upload.filename, upload.content_type)
        if kind is None:
            raise bad_field(
                "file",
                f"cannot tell the format of {upload.filename!r}; name it .jsonl, .csv or"
                " .parquet, or add ?format=",
            )
        return _parse(await upload.read(), kind, "file")
    # `format` is for a body whose Content-Type does not say (application/octet-stream)
    kind = format_of(content_type=media) or (None if media == "application/json" else fmt)
    if kind is not None:
        return _parse(await request.body(), kind, "body")
    if media in ("application/json", ""):
        try:
            return RowsBody.model_validate_json(await request.body()).rows
        except ValidationError as error:
            raise RequestValidationError(
                [{**e, "loc": ("body", *e["loc"])} for e in error.errors()]
            ) from None
    raise ApiError(
        415,
        f'cannot read a dataset sent as {media!r}: send JSON {{"rows": [...]}}, a multipart'
        f" 'file', or JSONL / CSV / Parquet as {', '.join(sorted(CONTENT_TYPES))}",
    )


def _parse(data: bytes, fmt: str, where: str) -> list[dict[str, Any]]:
    try:
        return parse_rows(data, fmt)
    except DatasetFileError as error:
        what = f"the {fmt} file {error}"
        if where == "file":
            raise bad_field(where, what) from None
        raise ApiError(400, f"request body: {what}") from None


async def stream_results(store: ObjectStore, objects: list[str]) -> AsyncIterator[bytes]:
    """The objects' bytes one after another, each ending in a newline; one that is missing
    (removed by hand from INFERNO_RESULTS) is skipped with a warning."""
    for name in objects:
        buffer = io.BytesIO()  # chunk by chunk: `.data` would be concatenated, O(n²)
        try:
            await store.get(name, writeinto=buffer)
        except NotFoundError:
            _log.warning("results object missing", name=name)
            continue
        data = buffer.getvalue()
        if data:
            yield data if data.endswith(b"\n") else data + b"\n"
