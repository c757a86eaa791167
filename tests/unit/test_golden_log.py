"""Logs written by earlier versions must still fold to the state they folded to then."""

from __future__ import annotations

from pathlib import Path

import pytest

from inferno.events import UnknownEvent, decode_event, fold, snapshot
from inferno.events.codec import _KNOWN_EVENT_TAGS

GOLDEN = Path(__file__).parent.parent / "golden"
VERSIONS = sorted(
    p.name.removeprefix("events-").removesuffix(".jsonl") for p in GOLDEN.glob("events-*.jsonl")
)


def read(version: str) -> list[bytes]:
    return (GOLDEN / f"events-{version}.jsonl").read_bytes().splitlines()


@pytest.mark.parametrize("version", VERSIONS)
def test_golden_log_folds_to_its_recorded_state(version):
    state = fold(decode_event(line) for line in read(version))
    expected = (GOLDEN / f"state-{version}.json").read_bytes().strip()
    assert snapshot(state) == expected


def test_unknown_event_types_are_skipped_and_counted():
    events = [decode_event(line) for line in read("v1")]
    unknown = [e for e in events if isinstance(e, UnknownEvent)]
    assert unknown == [UnknownEvent("pipeline_renamed")]
    assert fold(events).unknown_events == 1


def test_every_event_type_appears_in_some_golden_log():
    """A new event type needs a new golden version, so its stored shape is pinned too."""
    seen = {type(decode_event(line)).__struct_config__.tag for v in VERSIONS for line in read(v)}
    assert seen >= _KNOWN_EVENT_TAGS


def test_a_known_type_with_a_broken_payload_is_an_error_not_a_skip():
    with pytest.raises(Exception, match="pipeline_id"):
        decode_event(b'{"type":"pipeline_stopped","at":1.0}')
