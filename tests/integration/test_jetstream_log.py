"""The JetStream adapters against a real nats-server: bootstrap, appends, replay, tails.

Several tests pin server behaviour that `append` relies on (check order of msg id and expected
sequence, atomic batch acks and errors), so a server upgrade that changes it fails here first.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig
from nats.js.errors import BadRequestError

from inferno.events.names import Names
from inferno.jetstream import (
    Appender,
    AppendError,
    AppendResult,
    LogConfigConflict,
    LogUnavailable,
    Outgoing,
    StaleWriter,
    connect,
    durable_pull,
    ensure_log,
    follow,
    parse_ack_subject,
    replay,
)


def _events(names: Names, tag: str, n: int) -> list[Outgoing]:
    return [
        Outgoing(names.op_evt(1, f"{tag}{i}"), f"{tag}-{i}".encode(), f"{tag}-{i}")
        for i in range(n)
    ]


async def _last_seq(js: JetStreamContext, stream: str) -> int:
    return (await js.stream_info(stream)).state.last_seq


async def _raw_batch(nc: NATS, messages: list[Outgoing], expected: int | None) -> dict:
    """An atomic batch sent by hand, to pin what the server answers on the commit."""
    batch_id = uuid.uuid4().hex
    for number, message in enumerate(messages, start=1):
        headers = {
            "Nats-Msg-Id": message.msg_id,
            "Nats-Batch-Id": batch_id,
            "Nats-Batch-Sequence": str(number),
        }
        if number == 1 and expected is not None:
            headers["Nats-Expected-Last-Sequence"] = str(expected)
        if number == len(messages):
            headers["Nats-Batch-Commit"] = "1"
        reply = await nc.request(message.subject, message.payload, headers=headers, timeout=2)
        if number < len(messages):
            assert reply.data == b""  # a batch message that is not the commit: empty ack
    return json.loads(reply.data)


@pytest.fixture
async def log(js: JetStreamContext, names: Names) -> JetStreamContext:
    await ensure_log(js, names)
    return js


# bootstrap


async def test_ensure_log_twice_creates_then_finds_everything(js, names):
    first = await ensure_log(js, names, heartbeat_ttl_s=3, lease_ttl_s=2)
    assert first == [
        f"created stream {names.cmd_stream}",
        f"created stream {names.evt_stream}",
        f"created stream {names.exec_stream}",
        f"created stream {names.work_stream}",
        f"created kv {names.executors_bucket}",
        f"created kv {names.leader_bucket}",
        f"created kv {names.secrets_bucket}",
        f"created kv {names.limits_bucket}",
        f"created object store {names.data_store}",
        f"created object store {names.results_store}",
        f"created object store {names.snapshots_store}",
    ]
    second = await ensure_log(js, names, heartbeat_ttl_s=3, lease_ttl_s=2)
    assert second == [line.replace("created", "exists", 1) for line in first]

    evt = (await js.stream_info(names.evt_stream)).config
    assert evt.subjects == [names.evt_subjects]
    assert evt.allow_atomic
    assert evt.allow_direct
    assert evt.duplicate_window == 120
    work = (await js.stream_info(names.work_stream)).config
    assert work.retention == RetentionPolicy.WORK_QUEUE
    executors = (await js.stream_info(f"KV_{names.executors_bucket}")).config
    assert executors.max_age == 3
    assert executors.subject_delete_marker_ttl == 3
    assert executors.max_msgs_per_subject == 1
    leader = (await js.stream_info(f"KV_{names.leader_bucket}")).config
    assert leader.max_age == 2


async def test_an_existing_stream_with_other_subjects_is_a_conflict(js, names):
    await js.add_stream(StreamConfig(name=names.evt_stream, subjects=[f"{names.namespace}.x.>"]))
    with pytest.raises(LogConfigConflict) as caught:
        await ensure_log(js, names)
    message = str(caught.value)
    assert names.evt_stream in message
    assert "subjects" in message
    assert f"{names.namespace}.x.>" in message
    assert names.evt_subjects in message
    # nothing was changed behind the operator's back
    kept = (await js.stream_info(names.evt_stream)).config
    assert kept.subjects == [f"{names.namespace}.x.>"]


async def test_an_existing_stream_with_other_retention_is_a_conflict(js, names):
    await js.add_stream(
        StreamConfig(
            name=names.evt_stream,
            subjects=[names.evt_subjects],
            retention=RetentionPolicy.WORK_QUEUE,
        )
    )
    with pytest.raises(LogConfigConflict) as caught:
        await ensure_log(js, names)
    assert (caught.value.name, caught.value.field) == (names.evt_stream, "retention")
    assert (caught.value.existing, caught.value.wanted) == ("workqueue", "limits")


async def test_an_existing_bucket_with_another_ttl_is_a_conflict(js, names):
    await ensure_log(js, names, heartbeat_ttl_s=15)
    with pytest.raises(LogConfigConflict) as caught:
        await ensure_log(js, names, heartbeat_ttl_s=30)
    assert caught.value.kind == "kv"
    assert caught.value.name == names.executors_bucket
    assert caught.value.field == "max_age"


async def test_an_executor_entry_expiry_is_seen_by_a_watcher(js, names):
    await ensure_log(js, names, heartbeat_ttl_s=1)
    executors = await js.key_value(names.executors_bucket)
    watcher = await executors.watchall()
    assert await watcher.updates(timeout=2) is None  # end of the (empty) initial values
    await executors.put("gpu-1", b"alive")
    assert (await watcher.updates(timeout=2)).value == b"alive"
    lapse = await watcher.updates(timeout=5)
    assert lapse.key == "gpu-1"
    assert lapse.operation in ("PURGE", "DEL")
    await watcher.stop()


# single appends


async def test_a_duplicate_msg_id_is_stored_once(nc, log, names):
    appender = Appender(nc)
    message = Outgoing(names.pipeline_evt(7, "stopped"), b"{}", "pipeline-7-stopped")
    first = await appender.append(names.evt_stream, [message])
    again = await appender.append(names.evt_stream, [message])
    assert first == AppendResult(1, 1, duplicate=False)
    assert again == AppendResult(1, 1, duplicate=True)
    assert (await log.stream_info(names.evt_stream)).state.messages == 1


async def test_a_stale_expected_sequence_raises_and_stores_nothing(nc, log, names):
    appender = Appender(nc)
    await appender.append(names.evt_stream, _events(names, "a", 1), expected_last_seq=0)
    await appender.append(names.evt_stream, _events(names, "b", 1), expected_last_seq=1)
    with pytest.raises(StaleWriter) as caught:
        await appender.append(names.evt_stream, _events(names, "c", 1), expected_last_seq=1)
    assert (caught.value.expected, caught.value.actual) == (1, 2)
    assert caught.value.err_code == 10071
    assert await _last_seq(log, names.evt_stream) == 2


async def test_server_checks_expected_sequence_before_msg_id_on_single_publish(nc, log, names):
    """Pinned server behaviour: a retry whose fence went stale is refused (10071), not acked as
    a duplicate; `append` then finds its own message right after the fence."""
    appender = Appender(nc)
    message = _events(names, "a", 1)
    await appender.append(names.evt_stream, message, expected_last_seq=0)
    await appender.append(names.evt_stream, _events(names, "other", 1), expected_last_seq=1)

    headers = {"Nats-Msg-Id": message[0].msg_id, "Nats-Expected-Last-Sequence": "0"}
    with pytest.raises(BadRequestError) as caught:
        await log.publish(message[0].subject, message[0].payload, headers=headers)
    assert caught.value.err_code == 10071

    retried = await appender.append(names.evt_stream, message, expected_last_seq=0)
    assert retried == AppendResult(1, 1, duplicate=True)
    assert await _last_seq(log, names.evt_stream) == 2


# atomic batches


async def test_an_atomic_batch_stores_all_with_consecutive_sequences(nc, log, names):
    appender = Appender(nc)
    await appender.append(names.evt_stream, _events(names, "before", 1))
    result = await appender.append(names.evt_stream, _events(names, "a", 3), expected_last_seq=1)
    assert result == AppendResult(2, 4, duplicate=False)
    stored = [await log.get_msg(names.evt_stream, seq) for seq in (2, 3, 4)]
    assert [m.data for m in stored] == [b"a-0", b"a-1", b"a-2"]
    assert [m.headers["Nats-Msg-Id"] for m in stored] == ["a-0", "a-1", "a-2"]


async def test_an_atomic_batch_with_a_stale_fence_stores_none(nc, log, names):
    appender = Appender(nc)
    await appender.append(names.evt_stream, _events(names, "x", 2))
    with pytest.raises(StaleWriter) as caught:
        await appender.append(names.evt_stream, _events(names, "a", 3), expected_last_seq=1)
    assert (caught.value.expected, caught.value.actual) == (1, 2)
    info = await log.stream_info(names.evt_stream)
    assert (info.state.messages, info.state.last_seq) == (2, 2)
    # the same batch with the right fence goes through: nothing of the refused one lingered
    result = await appender.append(names.evt_stream, _events(names, "a", 3), expected_last_seq=2)
    assert result == AppendResult(3, 5, duplicate=False)


async def test_server_acks_a_batch_commit_with_last_seq_batch_and_count(nc, log, names):
    ack = await _raw_batch(nc, _events(names, "a", 3), expected=0)
    assert ack["seq"] == 3
    assert ack["count"] == 3
    assert len(ack["batch"]) == 32
    assert "error" not in ack


async def test_server_checks_msg_ids_before_expected_sequence_in_a_batch(nc, log, names):
    """Pinned server behaviour: a batch holding a stored msg id is refused whole with 10201,
    even when its fence is stale too; nothing is stored."""
    batch = _events(names, "a", 3)
    await _raw_batch(nc, batch, expected=0)
    await _raw_batch(nc, _events(names, "b", 2), expected=3)
    ack = await _raw_batch(nc, batch, expected=0)
    assert ack["error"]["err_code"] == 10201
    assert ack["seq"] == 0
    assert await _last_seq(log, names.evt_stream) == 5


async def test_retrying_a_stored_batch_stores_nothing(nc, log, names):
    appender = Appender(nc)
    batch = _events(names, "a", 3)
    stored = await appender.append(names.evt_stream, batch, expected_last_seq=0)
    assert stored == AppendResult(1, 3, duplicate=False)
    # a retry after a lost ack: same ids, same fence
    assert await appender.append(names.evt_stream, batch, expected_last_seq=0) == AppendResult(
        1, 3, duplicate=True
    )
    # ... also once others appended after it (the fence is stale now)
    await appender.append(names.evt_stream, _events(names, "b", 2), expected_last_seq=3)
    assert await appender.append(names.evt_stream, batch, expected_last_seq=0) == AppendResult(
        1, 3, duplicate=True
    )
    # ... and without a fence
    assert await appender.append(names.evt_stream, batch) == AppendResult(1, 3, duplicate=True)
    assert await _last_seq(log, names.evt_stream) == 5


async def test_a_batch_reusing_a_stored_msg_id_is_refused_whole(nc, log, names):
    appender = Appender(nc)
    await appender.append(names.evt_stream, _events(names, "a", 1))
    mixed = [*_events(names, "b", 2), *_events(names, "a", 1)]
    with pytest.raises(AppendError) as caught:
        await appender.append(names.evt_stream, mixed, expected_last_seq=1)
    assert caught.value.err_code == 10201
    assert await _last_seq(log, names.evt_stream) == 1


async def test_a_batch_on_a_stream_without_atomic_publish_is_refused(nc, log, names):
    commands = [Outgoing(names.pipeline_cmd(1, "stop"), b"{}", f"stop-{i}") for i in range(2)]
    with pytest.raises(AppendError) as caught:
        await Appender(nc).append(names.cmd_stream, commands)
    assert caught.value.err_code == 10174
    assert await _last_seq(log, names.cmd_stream) == 0


async def test_append_gives_up_after_the_retry_window_when_no_stream_answers(nc, names):
    message = [Outgoing(f"{names.namespace}.nowhere", b"", "id-1")]
    with pytest.raises(LogUnavailable):
        await Appender(nc).append("NO_SUCH_STREAM", message, timeout=0.5, retry_for=0.3)


# replay and follow


async def _fill(nc: NATS, names: Names, n: int) -> None:
    appender = Appender(nc)
    for i in range(n):
        subject = names.pipeline_evt(i % 2, "progress")  # pipelines 0 and 1 alternate
        await appender.append(names.evt_stream, [Outgoing(subject, str(i + 1).encode(), f"m{i}")])


async def test_replay_from_the_start_to_the_current_end(nc, log, names):
    await _fill(nc, names, 10)
    seen: list[tuple[bytes, int]] = []
    last = await replay(log, names.evt_stream, lambda data, seq: seen.append((data, seq)))
    assert last == 10
    assert seen == [(str(seq).encode(), seq) for seq in range(1, 11)]


async def test_replay_from_a_sequence_up_to_a_sequence(nc, log, names):
    await _fill(nc, names, 10)
    seqs: list[int] = []
    last = await replay(
        log, names.evt_stream, lambda d, seq: seqs.append(seq), start_seq=4, until_seq=7
    )
    assert (last, seqs) == (7, [4, 5, 6, 7])


async def test_replay_in_many_small_batches_keeps_order(nc, log, names):
    await _fill(nc, names, 10)
    seqs: list[int] = []
    last = await replay(log, names.evt_stream, lambda d, seq: seqs.append(seq), batch=3)
    assert last == 10
    assert seqs == list(range(1, 11))
    filtered: list[int] = []
    subject = names.pipeline_evt(0, "progress")
    await replay(log, names.evt_stream, lambda d, s: filtered.append(s), subjects=subject, batch=2)
    assert filtered == [1, 3, 5, 7, 9]


async def test_replay_from_a_time(nc, log, names):
    await _fill(nc, names, 3)
    await asyncio.sleep(0.05)
    cut = datetime.now(UTC)
    await asyncio.sleep(0.05)
    await Appender(nc).append(names.evt_stream, _events(names, "late", 2))
    seen: list[int] = []
    last = await replay(log, names.evt_stream, lambda d, seq: seen.append(seq), start_time=cut)
    assert last == 5
    assert seen == [4, 5]


async def test_replay_with_a_filter_ends_although_the_end_is_on_another_subject(nc, log, names):
    await _fill(nc, names, 10)  # pipeline 0 holds odd sequences, the last (10) is pipeline 1
    seqs: list[int] = []
    last = await replay(
        log,
        names.evt_stream,
        lambda d, seq: seqs.append(seq),
        subjects=names.pipeline_evt(0, ">"),
    )
    assert (last, seqs) == (9, [1, 3, 5, 7, 9])
    nothing = await replay(
        log,
        names.evt_stream,
        lambda d, seq: seqs.append(seq),
        subjects=names.pipeline_evt(99, ">"),
    )
    assert nothing == 0


async def test_replay_of_an_empty_stream_or_past_the_end_returns_at_once(nc, log, names):
    calls: list[int] = []
    assert await replay(log, names.evt_stream, lambda d, seq: calls.append(seq)) == 0
    await _fill(nc, names, 3)
    past = await replay(log, names.evt_stream, lambda d, s: calls.append(s), start_seq=4)
    assert past == 0
    future = datetime(2100, 1, 1, tzinfo=UTC)
    later = await replay(log, names.evt_stream, lambda d, s: calls.append(s), start_time=future)
    assert later == 0
    assert calls == []


async def test_replay_stops_when_the_handler_fails(nc, log, names):
    await _fill(nc, names, 5)
    seqs: list[int] = []

    def handler(data: bytes, seq: int) -> None:
        if seq == 3:
            raise ValueError("bad event")
        seqs.append(seq)

    with pytest.raises(ValueError, match="bad event"):
        await replay(log, names.evt_stream, handler)
    assert seqs == [1, 2]


async def test_follow_delivers_the_backlog_then_new_messages(nc, log, names):
    await _fill(nc, names, 3)
    seen: list[int] = []
    arrived = asyncio.Event()

    def handler(data: bytes, seq: int) -> None:
        seen.append(seq)
        if seq == 5:
            arrived.set()

    tail = await follow(log, names.evt_stream, handler, start_seq=2)
    await Appender(nc).append(names.evt_stream, _events(names, "live", 2))
    await asyncio.wait_for(arrived.wait(), timeout=5)
    await tail.stop()
    assert seen == [2, 3, 4, 5]
    assert tail.last_seq == 5


def test_ack_subjects_with_and_without_domain_parse_alike():
    v1 = "$JS.ACK.S.c.1.42.7.1700000000500000000.3"
    v2 = "$JS.ACK.hub.ACCHASH.S.c.1.42.7.1700000000500000000.3.rand"
    assert parse_ack_subject(v1) == parse_ack_subject(v2) == (42, 3)


# consumers and connections


async def test_durable_pull_is_idempotent_and_keeps_its_position(nc, log, names):
    appender = Appender(nc)
    subject = names.work("gpu-1")
    for i in range(2):
        await appender.append(names.work_stream, [Outgoing(subject, f"{i}".encode(), f"w{i}")])
    sub = await durable_pull(
        log, names.work_stream, "executor-gpu-1", filter_subject=subject, ack_wait=30, max_deliver=3
    )
    [first] = await sub.fetch(1, timeout=2)
    await first.ack_sync()
    await sub.unsubscribe()
    again = await durable_pull(
        log, names.work_stream, "executor-gpu-1", filter_subject=subject, ack_wait=60, max_deliver=3
    )
    [second] = await again.fetch(1, timeout=2)
    assert (first.data, second.data) == (b"0", b"1")
    info = await log.consumer_info(names.work_stream, "executor-gpu-1")
    assert info.config.ack_wait == 60
    await second.ack_sync()
    await again.unsubscribe()


async def test_durable_pull_keeps_its_state_in_memory_and_replaces_one_on_file(nc, log, names):
    """A durable an older version stored on file cannot be updated to memory in place: it is
    replaced, and the work-queue stream still holds what it had not acked."""
    subject = names.work("gpu-2")
    durable = "executor-gpu-2"
    on_file = ConsumerConfig(
        name=durable,
        durable_name=durable,
        filter_subject=subject,
        ack_policy=AckPolicy.EXPLICIT,
    )
    await log.add_consumer(names.work_stream, config=on_file)
    appender = Appender(nc)
    for i in range(2):
        await appender.append(names.work_stream, [Outgoing(subject, f"{i}".encode(), f"m{i}")])
    sub = await durable_pull(
        log, names.work_stream, durable, filter_subject=subject, ack_wait=30, max_deliver=3
    )
    info = await log.consumer_info(names.work_stream, durable)
    assert info.config.mem_storage
    got = [msg.data for msg in await sub.fetch(2, timeout=30)]  # returns once both came
    assert got == [b"0", b"1"]
    await sub.unsubscribe()


async def test_connect_uses_service_settings(nats_url):
    nc = await connect(nats_url, name="inferno-test")
    try:
        assert nc.is_connected
        assert nc.options["max_reconnect_attempts"] == -1
        assert nc.options["ping_interval"] <= 5
        assert nc.options["name"] == "inferno-test"
    finally:
        await nc.close()
