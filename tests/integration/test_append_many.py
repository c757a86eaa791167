"""`Appender.append_decisions` against a real nats-server: pipelined single-message decisions and
atomic batches in one fenced call, what lands when the fence goes stale, retries, and its cost."""

from __future__ import annotations

import time

import pytest
from nats.js import JetStreamContext

from inferno.events.names import Names
from inferno.jetstream import Appender, AppendResult, Outgoing, StaleWriter, ensure_log


def _decision(names: Names, tag: str, size: int = 1) -> list[Outgoing]:
    return [
        Outgoing(names.op_evt(1, f"{tag}x{i}"), f"{tag}-{i}".encode(), f"{tag}-{i}")
        for i in range(size)
    ]


def _mixed(names: Names, tag: str) -> list[list[Outgoing]]:
    """50 single-message decisions with a batch of 3 after the 20th and one of 2 after the 40th."""
    decisions = [_decision(names, f"{tag}{i}") for i in range(50)]
    decisions.insert(40, _decision(names, f"{tag}b2", 2))
    decisions.insert(20, _decision(names, f"{tag}b1", 3))
    return decisions


async def _stored_ids(js: JetStreamContext, stream: str) -> list[str]:
    last = (await js.stream_info(stream)).state.last_seq
    return [(await js.get_msg(stream, seq)).headers["Nats-Msg-Id"] for seq in range(1, last + 1)]


def _ids(decisions: list[list[Outgoing]]) -> list[str]:
    return [message.msg_id for decision in decisions for message in decision]


def _expected_results(decisions: list[list[Outgoing]], after: int) -> list[AppendResult]:
    results, seq = [], after
    for decision in decisions:
        results.append(AppendResult(seq + 1, seq + len(decision), False))
        seq += len(decision)
    return results


@pytest.fixture
async def log(js: JetStreamContext, names: Names) -> JetStreamContext:
    await ensure_log(js, names)
    return js


async def test_singles_and_batches_land_in_order_with_consecutive_sequences(nc, log, names):
    appender = Appender(nc)
    await appender.append(names.evt_stream, _decision(names, "before"))
    decisions = _mixed(names, "d")

    results = await appender.append_decisions(names.evt_stream, decisions, expected_last_seq=1)

    assert results == _expected_results(decisions, after=1)
    assert await _stored_ids(log, names.evt_stream) == ["before-0", *_ids(decisions)]


async def test_retrying_a_call_that_landed_stores_nothing_new(nc, log, names):
    appender = Appender(nc)
    decisions = _mixed(names, "r")
    first = await appender.append_decisions(names.evt_stream, decisions, expected_last_seq=0)

    again = await appender.append_decisions(names.evt_stream, decisions, expected_last_seq=0)

    assert again == [AppendResult(r.first_seq, r.last_seq, True) for r in first]
    assert await _stored_ids(log, names.evt_stream) == _ids(decisions)


async def test_a_stale_fence_raises_with_nothing_landed(nc, log, names):
    """Someone else appended exactly one message: by sequence alone the second message of the
    run would fit again; the msg id chain refuses it."""
    await Appender(nc).append(names.evt_stream, _decision(names, "other"), expected_last_seq=0)
    decisions = [_decision(names, f"s{i}") for i in range(5)] + [_decision(names, "sb", 2)]

    with pytest.raises(StaleWriter) as raised:
        await Appender(nc).append_decisions(names.evt_stream, decisions, expected_last_seq=0)

    assert raised.value.landed == []
    assert (raised.value.expected, raised.value.actual) == (0, 1)
    assert await _stored_ids(log, names.evt_stream) == ["other-0"]


async def test_a_fence_stale_in_the_middle_lands_the_decisions_before_it(nc, log, names):
    """The first three decisions (one a batch) landed earlier, then another writer appended: the
    same call again recognises those three, stops at the fourth and says which landed."""
    decisions = [_decision(names, "m0"), _decision(names, "m1", 2), _decision(names, "m2")]
    decisions += [_decision(names, f"m{i}") for i in range(3, 8)]
    mine, other = Appender(nc), Appender(nc)
    landed = await mine.append_decisions(names.evt_stream, decisions[:3], expected_last_seq=0)
    await other.append(names.evt_stream, _decision(names, "other"), expected_last_seq=4)

    with pytest.raises(StaleWriter) as raised:
        await mine.append_decisions(names.evt_stream, decisions, expected_last_seq=0)

    assert raised.value.landed == [AppendResult(r.first_seq, r.last_seq, True) for r in landed]
    assert [(r.first_seq, r.last_seq) for r in landed] == [(1, 1), (2, 3), (4, 4)]
    assert (raised.value.expected, raised.value.actual) == (4, 5)
    assert await _stored_ids(log, names.evt_stream) == [*_ids(decisions[:3]), "other-0"]


async def test_a_fence_going_stale_between_a_batch_and_the_next_run(nc, log, names):
    """Another writer appends one message right after our batch lands: the next run's first
    message is refused by sequence, its second (whose sequence matches again) by the id chain."""
    mine, other = Appender(nc), Appender(nc)
    decisions = [_decision(names, "g0"), _decision(names, "g1"), _decision(names, "gb", 2)]
    decisions += [_decision(names, f"g{i}") for i in range(3, 6)]
    batch_append = mine.append

    async def append_then_interfere(stream, messages, **kwargs):
        result = await batch_append(stream, messages, **kwargs)
        if len(messages) > 1:
            await other.append(stream, _decision(names, "other"), expected_last_seq=result.last_seq)
        return result

    mine.append = append_then_interfere  # type: ignore[method-assign]

    with pytest.raises(StaleWriter) as raised:
        await mine.append_decisions(names.evt_stream, decisions, expected_last_seq=0)

    assert raised.value.landed == _expected_results(decisions[:3], after=0)
    assert (raised.value.expected, raised.value.actual) == (4, 5)
    assert await _stored_ids(log, names.evt_stream) == [*_ids(decisions[:3]), "other-0"]


async def test_pipelined_decisions_against_sequential_appends(nc, log, names):
    appender = Appender(nc)
    sequential = [_decision(names, f"q{i}") for i in range(200)]
    pipelined = [_decision(names, f"p{i}") for i in range(200)]

    start = time.perf_counter()
    for seq, decision in enumerate(sequential):
        await appender.append(names.evt_stream, decision, expected_last_seq=seq)
    sequential_s = time.perf_counter() - start
    start = time.perf_counter()
    results = await appender.append_decisions(names.evt_stream, pipelined, expected_last_seq=200)
    pipelined_s = time.perf_counter() - start

    assert results == _expected_results(pipelined, after=200)
    print(
        f"\n200 single decisions: sequential append {sequential_s * 1000:.1f} ms, "
        f"append_decisions {pipelined_s * 1000:.1f} ms ({sequential_s / pipelined_s:.1f}x)"
    )
