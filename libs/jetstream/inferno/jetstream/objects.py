"""Putting an object in two round trips, in the object store's own format.

nats-py's `ObjectStore.put` waits for three answers in turn: a lookup of the name (to clean up the
chunks of an object it replaces), each chunk, then the meta message. `put_object` sends the
lookup and every chunk at once, then the meta, and the caller learns the object is stored when
the meta's ack comes back. Any reader (nats-py's `get`, the api, the tests) reads the result as
before. The meta waits for the lookup: the server handles API requests apart from publishes, and
a lookup sent with the meta was at times answered after it, named the new object, and left the
replaced one's chunks (a retried shard's) in the stream (`test_objects` caught it under load).

What differs: after a put that failed the name may show nothing new, or, if the meta was stored
and its ack lost, a meta whose chunks are all there. Readers of results read only completed
shards, whose final report is sent after `put_object` returned.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import uuid
from datetime import UTC, datetime

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import Header, ObjectInfo, ObjectMetaOptions

CHUNK_SIZE = 128 * 1024  # nats-py's default


async def put_object(js: JetStreamContext, bucket: str, name: str, data: bytes) -> None:
    """Store `data` as object `name` of the object store `bucket`; returns once it is stored."""
    stream = f"OBJ_{bucket}"
    nuid = uuid.uuid4().hex
    chunk_subject = f"$O.{bucket}.C.{nuid}"
    chunks = [data[i : i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)]
    info = ObjectInfo(
        name=name,
        bucket=bucket,
        nuid=nuid,
        size=len(data),
        chunks=len(chunks),
        mtime=datetime.now(UTC).isoformat(),
        digest="SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode(),
        options=ObjectMetaOptions(max_chunk_size=CHUNK_SIZE),
    )
    meta_subject = f"$O.{bucket}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"
    previous = asyncio.create_task(_previous_nuid(js, stream, meta_subject))
    try:
        await asyncio.gather(*(js.publish(chunk_subject, chunk, stream=stream) for chunk in chunks))
        old = await previous  # before the meta, which it would find otherwise
        await js.publish(
            meta_subject,
            json.dumps(info.as_dict()).encode(),
            stream=stream,
            headers={Header.ROLLUP: "sub"},
        )
    except Exception:
        previous.cancel()
        with contextlib.suppress(nats.errors.Error):
            await js.purge_stream(stream, subject=chunk_subject)
        raise
    if old is not None and old != nuid:
        await js.purge_stream(stream, subject=f"$O.{bucket}.C.{old}")


async def _previous_nuid(js: JetStreamContext, stream: str, meta_subject: str) -> str | None:
    """The chunks' id of the object this name holds now, if any (a lookup that fails is taken
    as none: cleaning up is not worth failing the put)."""
    try:
        msg = await js.get_last_msg(stream, meta_subject)
        info = ObjectInfo.from_response(json.loads(msg.data or b"{}"))
    except (nats.errors.Error, ValueError, TypeError, KeyError):
        return None
    return None if info.deleted else info.nuid
