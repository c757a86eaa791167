"""Bounded pull reads (`inferno.jetstream.pulls`) against a real nats-server: what `replay` and
`scan` hold at once is bounded in bytes, and the server statuses that bound relies on."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, StorageType

from inferno.events.names import Names
from inferno.jetstream import pulls, replay
from inferno.jetstream.scan import Stored, scan

BIG = 600_000  # bytes a message: 150 of them are 90 MB, past nats-py's 64 MiB pending limit


async def _stream(js: JetStreamContext, names: Names, sizes: list[int]) -> tuple[str, str]:
    """A memory stream of one message per size (`b"<seq>:"` then padding); (name, subject)."""
    stream, subject = f"{names.prefix}_PULLS", f"{names.prefix}.pulls.one"
    await js.add_stream(name=stream, subjects=[subject], storage=StorageType.MEMORY)
    for seq, size in enumerate(sizes, start=1):
        head = f"{seq}:".encode()
        await js.publish(subject, head + b"x" * (size - len(head)), stream=stream)
    return stream, subject


def _slow(seen: list[int]):
    """A handler that takes 2 ms a message, so what the server sends piles up in the client."""

    def handle(data: bytes, seq: int) -> None:
        assert data.startswith(f"{seq}:".encode())
        time.sleep(0.002)
        seen.append(seq)

    return handle


async def test_replay_of_big_messages_with_a_slow_handler_gets_every_one(js, names):
    stream, _ = await _stream(js, names, [BIG] * 150)
    seen: list[int] = []
    last = await asyncio.wait_for(replay(js, stream, _slow(seen)), timeout=120)
    assert last == 150
    assert seen == list(range(1, 151))


async def test_scan_of_big_messages_with_a_slow_visitor_gets_every_one(js, names):
    stream, subject = await _stream(js, names, [BIG] * 150)
    seen: list[int] = []
    handle = _slow(seen)

    def visit(message: Stored) -> bool:
        assert message.subject == subject
        handle(message.data, message.seq)
        return True

    last = await asyncio.wait_for(scan(js, stream, visit, subjects=[subject]), timeout=120)
    assert (last, seen) == (150, list(range(1, 151)))


async def test_small_messages_end_requests_by_count_and_replay_in_order(js, names):
    stream, _ = await _stream(js, names, [100] * 25)
    seen: list[int] = []
    last = await replay(js, stream, lambda data, seq: seen.append(seq), batch=4)
    assert (last, seen) == (25, list(range(1, 26)))


async def test_a_message_too_big_for_a_request_is_an_error_not_a_hang(js, names, monkeypatch):
    stream, _ = await _stream(js, names, [100, 5_000, 100])
    monkeypatch.setattr(pulls, "request_bytes", lambda max_payload: 1_000)
    seen: list[int] = []
    with pytest.raises(RuntimeError, match=f"{stream} holds a message over 1000 bytes"):
        await asyncio.wait_for(replay(js, stream, lambda d, seq: seen.append(seq)), timeout=30)
    assert seen == [1]


async def _statuses(nc: NATS, js: JetStreamContext, stream: str, requests: list[dict]) -> list:
    """What the server sends for pull requests asked one after the other: a stored message's
    sequence, or a status as (code, description, messages the request did not get)."""
    consumer = await js.add_consumer(stream, config=ConsumerConfig(ack_policy=AckPolicy.NONE))
    inbox, got = nc.new_inbox(), asyncio.Queue[object]()

    async def on_message(msg: Msg) -> None:
        if msg.reply:
            await got.put(int(msg.reply.split(".")[5]))
        else:
            headers = msg.headers or {}
            status = (headers.get("Status"), headers.get("Description"))
            await got.put((*status, headers.get("Nats-Pending-Messages")))

    sub = await nc.subscribe(inbox, cb=on_message)
    seen: list[object] = []
    for body in requests:
        await nc.publish(
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer.name}",
            json.dumps({**body, "no_wait": True}).encode(),
            reply=inbox,
        )
        while isinstance(answer := await asyncio.wait_for(got.get(), timeout=30), int):
            seen.append(answer)
        seen.append(answer)  # each request ends with a status
    await sub.unsubscribe()
    return seen


async def test_the_server_ends_every_request_with_max_bytes_by_a_status(nc, js, names):
    """What `pulls` counts its open requests by: a server upgrade that changes it fails here."""
    stream, _ = await _stream(js, names, [1_000, 1_000, 3_000, 1_000])
    seen = await _statuses(
        nc,
        js,
        stream,
        [
            {"batch": 1, "max_bytes": 100_000},  # ends by its count
            {"batch": 5, "max_bytes": 2_500},  # by its bytes, after one message
            {"batch": 5, "max_bytes": 2_500},  # by its bytes, before any
            {"batch": 5, "max_bytes": 100_000},  # by running out
        ],
    )
    assert seen == [
        1,
        ("409", "Batch Completed", "0"),
        2,
        ("409", "Message Size Exceeds MaxBytes", "4"),
        ("409", "Message Size Exceeds MaxBytes", "5"),
        3,
        4,
        ("404", "No Messages", None),
    ]
