"""`put_object`: an object written in one round trip reads back through nats-py's own
`ObjectStore.get`, and a rewrite of the name leaves only the new object's chunks."""

from __future__ import annotations

import os

from nats.js import JetStreamContext

from inferno.events.names import Names
from inferno.jetstream import ensure_log
from inferno.jetstream.objects import CHUNK_SIZE, put_object


async def test_an_object_reads_back_whole_and_a_rewrite_drops_the_old_chunks(
    js: JetStreamContext, names: Names
) -> None:
    await ensure_log(js, names)
    store = await js.object_store(names.results_store)
    stream = f"OBJ_{names.results_store}"
    first = os.urandom(2 * CHUNK_SIZE + 17)  # three chunks
    await put_object(js, names.results_store, "exp/1/0.jsonl", first)
    read = await store.get("exp/1/0.jsonl")
    assert read.data == first
    assert (read.info.size, read.info.chunks) == (len(first), 3)
    assert (await js.stream_info(stream)).state.messages == 4  # 3 chunks + the meta

    second = b'{"row_index": 0}\n'
    await put_object(js, names.results_store, "exp/1/0.jsonl", second)
    assert (await store.get("exp/1/0.jsonl")).data == second
    assert (await js.stream_info(stream)).state.messages == 2  # its chunk + its meta

    await put_object(js, names.results_store, "exp/1/1.jsonl", b"")
    assert (await store.get("exp/1/1.jsonl")).data == b""
