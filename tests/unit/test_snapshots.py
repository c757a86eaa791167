"""The snapshot format (inferno.jetstream.snapshots): what is trusted, what is refused and why."""

from __future__ import annotations

import hashlib

import msgspec
import pytest

from inferno.jetstream.snapshot_writer import Cadence
from inferno.jetstream.snapshots import (
    FORMAT_VERSION,
    SnapshotHeader,
    SnapshotRejected,
    newest,
    parse_name,
    seal,
    snapshot_name,
    unseal,
)
from inferno.runtime.settings import ConfigError, Settings


class Model(msgspec.Struct):
    counts: dict[int, int]
    names: set[str]


def header(payload: bytes, **changes: object) -> SnapshotHeader:
    fields: dict[str, object] = {
        "format": FORMAT_VERSION,
        "model": "decision",
        "model_version": 3,
        "sequences": {"T_EVT": 42},
        "marks": {"T_EVT": "ab" * 16},
        "sha256": hashlib.sha256(payload).hexdigest(),
        "taken_at": 1_700_000_000.0,
        "writer": "sched-1",
    }
    return SnapshotHeader(**{**fields, **changes})  # type: ignore[arg-type]


def test_a_sealed_snapshot_unseals_to_its_header_and_payload():
    payload = msgspec.msgpack.encode(Model({1: 2}, {"a"}))
    got_header, got_payload = unseal(seal(header(payload), payload), "decision", 3)
    assert got_header == header(payload)
    assert msgspec.msgpack.decode(got_payload, type=Model) == Model({1: 2}, {"a"})


def test_a_flipped_payload_byte_fails_the_checksum():
    payload = msgspec.msgpack.encode(Model({1: 2}, {"a"}))
    blob = bytearray(seal(header(payload), payload))
    blob[-1] ^= 0xFF
    with pytest.raises(SnapshotRejected, match="checksum mismatch"):
        unseal(bytes(blob), "decision", 3)


@pytest.mark.parametrize(
    ("blob", "reason"),
    [
        (b"", "truncated"),
        (b"\x00\x00\x00\x03\xff\xff\xff", "undecodable header"),
        (b"\x00\x00\x00\x01\x90payload", "undecodable header"),  # an empty msgpack array
    ],
)
def test_garbage_is_rejected_with_the_reason(blob, reason):
    with pytest.raises(SnapshotRejected, match=reason):
        unseal(blob, "decision", 3)


def test_an_unknown_format_version_is_rejected_before_the_rest_is_read():
    future = msgspec.msgpack.encode({"format": FORMAT_VERSION + 1, "layout": "columnar"})
    blob = len(future).to_bytes(4, "big") + future + b"whatever"
    with pytest.raises(SnapshotRejected, match=f"unknown format version {FORMAT_VERSION + 1}"):
        unseal(blob, "decision", 3)


def test_another_model_version_or_model_is_rejected():
    payload = b"\x80"
    with pytest.raises(SnapshotRejected, match="unknown decision version 3"):
        unseal(seal(header(payload), payload), "decision", 4)
    with pytest.raises(SnapshotRejected, match="holds model 'decision', not 'readmodel'"):
        unseal(seal(header(payload), payload), "readmodel", 3)


def test_names_carry_the_model_and_the_sequences_and_parse_back():
    name = snapshot_name("readmodel", {"T_EVT": 1234, "T_CMD": 56})
    assert name == "readmodel@T_CMD=56,T_EVT=1234"
    assert parse_name(name) == ("readmodel", {"T_CMD": 56, "T_EVT": 1234})
    for other in ("readmodel", "@T_EVT=1", "readmodel@", "readmodel@T_EVT=x", "m@T_EVT"):
        assert parse_name(other) is None


def test_newest_puts_the_snapshot_that_includes_most_of_the_log_first():
    names = [
        "decision@T_EVT=9",
        "decision@T_EVT=120",
        "readmodel@T_CMD=5,T_EVT=500",
        "not a snapshot",
        "decision@T_EVT=30",
    ]
    assert newest(names, "decision") == [
        "decision@T_EVT=120",
        "decision@T_EVT=30",
        "decision@T_EVT=9",
    ]
    assert newest(names, "readmodel") == ["readmodel@T_CMD=5,T_EVT=500"]


def test_the_cadence_counts_events_and_time_and_never_saves_nothing_new():
    cadence = Cadence(every_events=1000, every_s=60)
    assert not cadence.due(0, 3600)  # nothing folded since the last one
    assert not cadence.due(999, 59)
    assert cadence.due(1000, 0)
    assert cadence.due(1, 60)
    assert not Cadence(every_events=0).due(10**9, 10**9)  # off


def test_the_cadence_comes_from_the_environment_and_bad_values_name_the_variable():
    settings = Settings.from_env(
        {"INFERNO_SNAPSHOT_EVERY_EVENTS": "0", "INFERNO_SNAPSHOT_EVERY_S": "30"}
    )
    assert (settings.snapshot_every_events, settings.snapshot_every_s) == (0, 30.0)
    assert (Settings().snapshot_every_events, Settings().snapshot_every_s) == (100_000, 300.0)
    with pytest.raises(ConfigError, match="INFERNO_SNAPSHOT_EVERY_EVENTS='-1' is invalid"):
        Settings.from_env({"INFERNO_SNAPSHOT_EVERY_EVENTS": "-1"})
    with pytest.raises(ConfigError, match="INFERNO_SNAPSHOT_EVERY_S='0' is invalid"):
        Settings.from_env({"INFERNO_SNAPSHOT_EVERY_S": "0"})
