"""The snapshot store against a real nats-server: save and load, keep the newest, and fall back
to a full replay (None, logged with the reason) whenever a snapshot cannot be trusted."""

from __future__ import annotations

import hashlib
import time

import msgspec
import structlog

from inferno.events.names import Names
from inferno.jetstream import Cadence, SnapshotStore, SnapshotWriter, ensure_log
from inferno.jetstream.snapshots import (
    FORMAT_VERSION,
    SnapshotHeader,
    message_mark,
    seal,
    snapshot_name,
)


class Model(msgspec.Struct):
    totals: dict[int, int]
    seen: set[str]


decoder = msgspec.msgpack.Decoder(Model)


async def log_with(js, names: Names, count: int) -> dict[str, int]:
    """`count` messages on EVT; the sequences a snapshot of all of it would include."""
    await ensure_log(js, names)
    for i in range(count):
        await js.publish(names.pipeline_evt(i, "stopped"), b'{"n":%d}' % i)
    return {names.evt_stream: count}


async def load(store: SnapshotStore) -> tuple[object, list[dict]]:
    with structlog.testing.capture_logs() as logs:
        loaded = await store.load("m", 1, decoder.decode)
    return loaded, logs


async def put_raw(js, names: Names, sequences: dict[str, int], blob: bytes) -> None:
    store = await js.object_store(names.snapshots_store)
    await store.put(snapshot_name("m", sequences), blob)


async def sealed(store: SnapshotStore, sequences: dict[str, int], payload: bytes, **changes):
    fields = {
        "format": FORMAT_VERSION,
        "model": "m",
        "model_version": 1,
        "sequences": sequences,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "taken_at": time.time(),
        **changes,
    }
    if "marks" not in fields:
        fields["marks"] = await store.marks(sequences)
    return seal(SnapshotHeader(**fields), payload)


async def test_a_saved_snapshot_loads_with_its_state_and_sequences(js, names):
    sequences = await log_with(js, names, 3)
    store = SnapshotStore(js, names)
    state = Model({1: 10, 2: 20}, {"a", "b"})
    name = await store.save("m", 1, sequences, msgspec.msgpack.encode(state), writer="w1")
    assert name == f"m@{names.evt_stream}=3"
    loaded, logs = await load(store)
    assert loaded is not None
    assert loaded.state == state
    assert loaded.sequences == sequences
    assert loaded.header.writer == "w1"
    assert logs[-1]["event"] == "snapshot loaded"


async def test_no_snapshot_means_a_full_replay(js, names):
    await log_with(js, names, 1)
    loaded, logs = await load(SnapshotStore(js, names))
    assert loaded is None
    assert [entry["event"] for entry in logs] == ["no snapshot: full replay"]


async def test_only_the_newest_snapshots_are_kept_and_the_newest_is_loaded(js, names):
    await log_with(js, names, 5)
    store = SnapshotStore(js, names)
    for seq in (1, 2, 3, 4):
        await store.save(
            "m", 1, {names.evt_stream: seq}, msgspec.msgpack.encode(Model({seq: 1}, set()))
        )
    await store.save("other", 1, {names.evt_stream: 5}, b"\x80")  # another model's: untouched
    objects = await (await js.object_store(names.snapshots_store)).list(ignore_deletes=True)
    assert sorted(o.name for o in objects) == [
        f"m@{names.evt_stream}=3",
        f"m@{names.evt_stream}=4",
        f"other@{names.evt_stream}=5",
    ]
    loaded, _ = await load(store)
    assert loaded is not None
    assert loaded.state == Model({4: 1}, set())


async def assert_rejected(store: SnapshotStore, reason: str) -> None:
    loaded, logs = await load(store)
    assert loaded is None
    [entry] = logs
    assert entry["event"] == "snapshot rejected: full replay"
    assert entry["log_level"] == "warning"
    assert reason in entry["reason"]


async def test_a_corrupt_payload_is_rejected(js, names):
    sequences = await log_with(js, names, 2)
    store = SnapshotStore(js, names)
    payload = msgspec.msgpack.encode(Model({1: 1}, set()))
    blob = bytearray(await sealed(store, sequences, payload))
    blob[-2] ^= 0x01
    await put_raw(js, names, sequences, bytes(blob))
    await assert_rejected(store, "checksum mismatch")


async def test_an_unknown_format_or_model_version_is_rejected(js, names):
    sequences = await log_with(js, names, 2)
    store = SnapshotStore(js, names)
    payload = msgspec.msgpack.encode(Model({}, set()))
    await put_raw(js, names, sequences, await sealed(store, sequences, payload, model_version=2))
    await assert_rejected(store, "unknown m version 2")
    future = msgspec.msgpack.encode({"format": FORMAT_VERSION + 1})
    await put_raw(js, names, sequences, len(future).to_bytes(4, "big") + future)
    await assert_rejected(store, f"unknown format version {FORMAT_VERSION + 1}")


async def test_a_payload_that_is_not_the_model_is_rejected(js, names):
    sequences = await log_with(js, names, 2)
    store = SnapshotStore(js, names)
    payload = msgspec.msgpack.encode({"totals": "not a dict"})
    await put_raw(js, names, sequences, await sealed(store, sequences, payload))
    await assert_rejected(store, "undecodable payload")


async def test_a_snapshot_ahead_of_the_log_is_rejected(js, names):
    await log_with(js, names, 2)
    store = SnapshotStore(js, names)
    payload = msgspec.msgpack.encode(Model({}, set()))
    ahead = {names.evt_stream: 7}
    blob = await sealed(store, ahead, payload, marks={names.evt_stream: "?"})
    await put_raw(js, names, ahead, blob)
    await assert_rejected(store, f"ahead of the log: {names.evt_stream} ends at 2, not 7")


async def test_a_snapshot_of_another_log_is_rejected(js, names):
    """The stream was deleted and made again: as long, but not the log the snapshot folded."""
    sequences = await log_with(js, names, 2)
    store = SnapshotStore(js, names)
    await store.save("m", 1, sequences, msgspec.msgpack.encode(Model({}, set())))
    await js.delete_stream(names.evt_stream)
    await ensure_log(js, names)
    for i in range(2):
        await js.publish(names.pipeline_evt(i, "resumed"), b"{}")
    await assert_rejected(store, f"{names.evt_stream} differs from the log it was taken from")


async def test_marks_name_the_message_at_each_sequence(js, names):
    await log_with(js, names, 2)
    marks = await SnapshotStore(js, names).marks({names.evt_stream: 2, names.cmd_stream: 0})
    expected = message_mark(names.pipeline_evt(1, "stopped"), b'{"n":1}')
    assert marks == {names.evt_stream: expected, names.cmd_stream: ""}


async def test_the_writer_saves_when_due_one_upload_at_a_time(js, names):
    await log_with(js, names, 30)
    store = SnapshotStore(js, names)
    writer = SnapshotWriter(store, "m", 1, Cadence(every_events=10, every_s=3600), writer="w")
    encoded: list[int] = []

    def encode(seq: int):
        def run() -> bytes:
            encoded.append(seq)
            return msgspec.msgpack.encode(Model({seq: seq}, set()))

        return run

    stream = names.evt_stream
    assert not writer.offer({stream: 9}, encode(9))  # not due yet
    assert writer.offer({stream: 10}, encode(10))
    assert not writer.offer({stream: 25}, encode(25))  # due, but the first is still uploading
    await writer.wait()
    assert writer.saved == f"m@{stream}=10"
    assert not writer.offer({stream: 19}, encode(19))  # 9 since the last one
    assert writer.offer({stream: 30}, encode(30))
    await writer.wait()
    assert encoded == [10, 30]
    loaded, _ = await load(store)
    assert loaded is not None
    assert loaded.state == Model({30: 30}, set())
