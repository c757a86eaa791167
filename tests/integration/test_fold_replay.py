"""Replaying INFERNO_EVT into the fold, from the start, from a sequence or from a time, gives the
same state as folding the events in memory."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from inferno.events import State, decode_event, evolve, fold, snapshot
from inferno.events.names import Names
from inferno.jetstream import Appender, Outgoing, ensure_log, replay

GOLDEN = Path(__file__).parent.parent / "golden" / "events-v2.jsonl"


def golden() -> list[bytes]:
    return GOLDEN.read_bytes().splitlines()


async def append_all(nc, names: Names, payloads: list[bytes], prefix: str) -> None:
    appender = Appender(nc)
    for i, payload in enumerate(payloads):
        subject = names.evt_subjects.replace(">", f"golden.{i}")
        await appender.append(names.evt_stream, [Outgoing(subject, payload, f"{prefix}-{i}")])


async def fold_from(js, names: Names, state: State, **start) -> State:
    await replay(js, names.evt_stream, lambda data, seq: evolve(state, decode_event(data)), **start)
    return state


async def test_replay_from_the_start_equals_the_in_memory_fold(nc, js, names):
    await ensure_log(js, names)
    log = golden()
    await append_all(nc, names, log, "g")
    replayed = await fold_from(js, names, State())
    assert snapshot(replayed) == snapshot(fold(decode_event(line) for line in log))


async def test_replay_from_a_sequence_continues_a_saved_state(nc, js, names):
    await ensure_log(js, names)
    log = golden()
    await append_all(nc, names, log, "g")
    cut = len(log) // 2
    head = fold(decode_event(line) for line in log[:cut])
    resumed = await fold_from(js, names, head, start_seq=cut + 1)
    assert snapshot(resumed) == snapshot(fold(decode_event(line) for line in log))


async def test_replay_from_a_time_continues_a_state_saved_before_it(nc, js, names):
    await ensure_log(js, names)
    log = golden()
    cut = len(log) // 3
    await append_all(nc, names, log[:cut], "early")
    await asyncio.sleep(0.05)
    since = datetime.now(UTC)
    await asyncio.sleep(0.05)
    await append_all(nc, names, log[cut:], "late")
    head = fold(decode_event(line) for line in log[:cut])
    resumed = await fold_from(js, names, head, start_time=since)
    assert snapshot(resumed) == snapshot(fold(decode_event(line) for line in log))
