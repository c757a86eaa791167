"""Datasets in INFERNO_DATA: stored once under their content digest, in blocks with a manifest.

Uploads come as JSON rows or as a JSONL, CSV or Parquet file; either way the rows are stored as
canonical JSONL (`inferno.datasets.blocks`), so the same rows get the same `dataset_ref` whatever
file they came in, and creating an experiment reads the manifest only.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, BinaryIO

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
from inferno.datasets.blocks import Block, BlockWriter, Manifest
from inferno.datasets.files import CONTENT_TYPES, DatasetFileError, format_of, iter_rows
from inferno.datasets.objects import BlockUploader, read_manifest, read_whole
from inferno.datasets.store import Row, dataset_ref, from_jsonl

_log = structlog.get_logger(__name__)

BODY_BUFFER_BYTES = 1 << 20
"""What an upload reads ahead of the parser; with the writer's block and the blocks in flight
(`inferno.datasets.objects.BLOCKS_IN_FLIGHT`), what it holds (docs/api.md states the bound)."""

Submit = Callable[[Block, bytes], None]


async def store_rows(gw: Gateway, rows: Iterable[Row]) -> Manifest:
    """Store rows at hand (a JSON body, inline rows) in blocks; the dataset's manifest."""
    return await _store(gw, lambda submit: _write(rows, submit))


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
        source = upload.file
        return await _store_file(gw, lambda: source, kind, "file")
    # `format` is for a body whose Content-Type does not say (application/octet-stream)
    kind = format_of(content_type=media) or (None if media == "application/json" else fmt)
    if kind is not None:
        body = _BodyReader(request.stream(), asyncio.get_running_loop())
        reader = io.BufferedReader(body, BODY_BUFFER_BYTES)
        return await _store_file(gw, lambda: reader, kind, "body")
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


async def _store_file(
    gw: Gateway, open_source: Callable[[], BinaryIO], fmt: str, where: str
) -> Manifest:
    def parse(submit: Submit) -> Manifest:
        source = open_source()
        if fmt != "parquet" or source.seekable():
            return _write(iter_rows(source, fmt), submit)
        with tempfile.TemporaryFile() as spool:
            shutil.copyfileobj(source, spool, BODY_BUFFER_BYTES)
            spool.seek(0)
            return _write(iter_rows(spool, fmt), submit)

    try:
        return await _store(gw, parse)
    except DatasetFileError as error:
        what = f"the {fmt} file {error}"
        if where == "file":
            raise bad_field(where, what) from None
        raise ApiError(400, f"request body: {what}") from None


async def _store(gw: Gateway, parse: Callable[[Submit], Manifest]) -> Manifest:
    """Run `parse` in a thread, storing the blocks it submits as it goes, then the manifest;
    on any error (a bad row, a body over its limit, a lost client) nothing of it stays."""
    store = await gw.js.object_store(gw.names.data_store)
    uploader = BlockUploader(store)
    loop = asyncio.get_running_loop()

    def submit(block: Block, data: bytes) -> None:  # in the thread: waits while blocks queue
        asyncio.run_coroutine_threadsafe(uploader.put(block, data), loop).result()

    try:
        manifest = await asyncio.to_thread(parse, submit)
        await uploader.commit(manifest)
    except BaseException:
        await asyncio.shield(uploader.abort())
        raise
    return manifest


def _write(rows: Iterable[Row], submit: Submit) -> Manifest:
    writer = BlockWriter(uuid.uuid4().hex)
    for row in rows:
        if (done := writer.add(row)) is not None:
            submit(*done)
    if (last := writer.finish()) is not None:
        submit(*last)
    return writer.manifest()


class _BodyReader(io.RawIOBase):
    """A request body as a file, read from a worker thread: each read waits on the event loop
    for the next chunk (and raises what receiving it raised, such as a 413)."""

    def __init__(self, chunks: AsyncIterator[bytes], loop: asyncio.AbstractEventLoop) -> None:
        self._chunks, self._loop = chunks, loop
        self._left = memoryview(b"")
        self._ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._left and not self._ended:
            chunk = asyncio.run_coroutine_threadsafe(self._next(), self._loop).result()
            self._ended = chunk is None
            self._left = memoryview(chunk or b"")
        size = min(len(buffer), len(self._left))
        buffer[:size] = self._left[:size]
        self._left = self._left[size:]
        return size

    async def _next(self) -> bytes | None:
        """Chunks up to BODY_BUFFER_BYTES at once: each hand-over between the thread and the
        loop waits for the other to let go of the GIL, so there are few of them."""
        slab = bytearray()
        async for chunk in self._chunks:
            slab += chunk
            if len(slab) >= BODY_BUFFER_BYTES:
                return bytes(slab)
        return bytes(slab) or None


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
