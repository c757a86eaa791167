"""Datasets in INFERNO_DATA: stored once under their content digest, in blocks with a manifest.

Uploads come as JSON rows or as a JSONL, CSV or Parquet file; either way the rows are stored as
canonical JSONL (`inferno.datasets.blocks`), so the same rows get the same `dataset_ref` whatever
file they came in, and creating an experiment reads the manifest only.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterable

import structlog
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from inferno.api.deps import Gateway
from inferno.api.errors import ApiError, bad_field
from inferno.api.schemas import RowsBody
from inferno.datasets.blocks import BlockWriter, Manifest
from inferno.datasets.files import (
    CONTENT_TYPES,
    DatasetFileError,
    format_of,
    iter_rows,
    row_feed,
)
from inferno.datasets.objects import BlockUploader, read_block, read_manifest, read_whole
from inferno.datasets.store import Row, dataset_ref, from_jsonl

_log = structlog.get_logger(__name__)

Pieces = AsyncGenerator[Iterable[Row], None]
"""An upload's rows as they come: each piece's rows are stored before the next is read."""


async def store_rows(gw: Gateway, rows: Iterable[Row]) -> Manifest:
    """Store rows at hand (a JSON body, inline rows) in blocks; the dataset's manifest."""
    return await _store(gw, _one(rows))


async def load_manifest(gw: Gateway, ref: str, field: str) -> Manifest:
    """What describes dataset `ref`, without reading its rows; a 400 naming `field` when it is
    not stored. A dataset stored whole (before blocks) is read once and stored in blocks."""
    store = await gw.js.object_store(gw.names.data_store)
    manifest = await read_manifest(store, ref)
    if manifest is not None:
        return manifest
    data = await read_whole(store, ref)
    if data is None:
        raise bad_field(field, f"no dataset {ref!r} is stored; upload it with POST /datasets")
    if dataset_ref(data) != ref:
        raise bad_field(field, f"dataset {ref!r} is stored with content that does not match it")
    _log.info("dataset stored whole, storing it in blocks", dataset_ref=ref)
    return await store_rows(gw, from_jsonl(data))


async def store_upload(request: Request, gw: Gateway, fmt: str | None) -> Manifest:
    """Store an upload: JSON `{"rows": [...]}`, a multipart form's `file`, or a raw body in
    JSONL, CSV or Parquet named by its Content-Type (or by `fmt`, the `format` query). Files are
    read as a stream, never whole: a raw body as it arrives, a form's file from where Starlette
    spooled it, Parquet (its index is at the end) from a temporary file."""
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
        return await _store_file(gw, _one(iter_rows(upload.file, kind)), kind, "file")
    # `format` is for a body whose Content-Type does not say (application/octet-stream)
    kind = format_of(content_type=media) or (None if media == "application/json" else fmt)
    if kind == "parquet":
        return await _store_file(gw, _parquet(request.stream()), kind, "body")
    if kind is not None:
        return await _store_file(gw, _fed(request.stream(), kind), kind, "body")
    if media in ("application/json", ""):
        try:
            rows = RowsBody.model_validate_json(await request.body()).rows
        except ValidationError as error:
            raise RequestValidationError(
                [{**e, "loc": ("body", *e["loc"])} for e in error.errors()]
            ) from None
        return await store_rows(gw, rows)
    raise ApiError(
        415,
        f'cannot read a dataset sent as {media!r}: send JSON {{"rows": [...]}}, a multipart'
        f" 'file', or JSONL / CSV / Parquet as {', '.join(sorted(CONTENT_TYPES))}",
    )


async def _store_file(gw: Gateway, pieces: Pieces, fmt: str, where: str) -> Manifest:
    try:
        return await _store(gw, pieces)
    except DatasetFileError as error:
        what = f"the {fmt} file {error}"
        if where == "file":
            raise bad_field(where, what) from None
        raise ApiError(400, f"request body: {what}") from None


async def _store(gw: Gateway, pieces: Pieces) -> Manifest:
    """Cut the rows into blocks and store them as they come, then the manifest; on any error (a
    bad row, a body over its limit, a lost client) nothing of the upload stays. On the event
    loop: parsing a piece takes about a millisecond, and each stored block lets others run."""
    uploader = BlockUploader(await gw.js.object_store(gw.names.data_store))
    writer = BlockWriter(uuid.uuid4().hex)
    try:
        async with contextlib.aclosing(pieces):  # a spooled Parquet file goes at once
            async for rows in pieces:
                for row in rows:
                    if (done := writer.add(row)) is not None:
                        await uploader.put(*done)
        if (last := writer.finish()) is not None:
            await uploader.put(*last)
        manifest = writer.manifest()
        await uploader.commit(manifest)
    except BaseException:
        await asyncio.shield(uploader.abort())
        raise
    return manifest


async def _one(rows: Iterable[Row]) -> Pieces:
    yield rows


async def _fed(body: AsyncIterator[bytes], fmt: str) -> Pieces:
    """A JSONL or CSV body's rows, chunk by chunk as it arrives."""
    feed = row_feed(fmt)
    async for chunk in body:
        yield feed.feed(chunk)
    yield feed.end()


async def _parquet(body: AsyncIterator[bytes]) -> Pieces:
    """A Parquet body's rows: its index is at its end, so it is spooled to a temporary file
    (disk, not memory) and then read a batch of rows at a time."""
    with tempfile.TemporaryFile() as spool:
        async for chunk in body:
            spool.write(chunk)
        spool.seek(0)
        yield iter_rows(spool, "parquet")


async def stored_blocks(gw: Gateway, manifest: Manifest) -> AsyncIterator[list[Row]]:
    """The dataset's rows a block at a time, each block checked against its digest."""
    store = await gw.js.object_store(gw.names.data_store)
    for block in manifest.blocks:
        yield from_jsonl(await read_block(store, block))
