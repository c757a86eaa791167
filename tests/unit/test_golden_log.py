"""Logs written by earlier versions must still fold to what they folded to then."""

from __future__ import annotations

from pathlib import Path

import pytest

from inferno.events import UnknownEvent, decode_event, fold, snapshot
from inferno.events.codec import _KNOWN_EVENT_TAGS
from inferno.readmodels import ReadModel, apply_event, encoded
from tests.golden.regenerate import read_model
from tests.oracle import projection_v0 as oracle
from tests.unit.test_readmodels import comparable, same_as_oracle, shared_fields

GOLDEN = Path(__file__).parent.parent / "golden"
VERSIONS = sorted(
    p.name.removeprefix("events-").removesuffix(".jsonl") for p in GOLDEN.glob("events-*.jsonl")
)
BEFORE_READ_MODELS = [v for v in VERSIONS if not (GOLDEN / f"commands-{v}.jsonl").exists()]
WITH_READ_MODELS = [v for v in VERSIONS if v not in BEFORE_READ_MODELS]


def read(version: str, what: str = "events") -> list[bytes]:
    return (GOLDEN / f"{what}-{version}.jsonl").read_bytes().splitlines()


def recorded(version: str, what: str) -> bytes:
    return (GOLDEN / f"{what}-{version}.json").read_bytes().strip()


@pytest.mark.parametrize("version", BEFORE_READ_MODELS)
def test_an_old_log_folds_to_the_read_model_and_decision_state_it_did(version):
    """Its recorded state is the one `State` of before; the oracle still folds to it, and the
    read model and the decision state hold each of its fields with the same value."""
    events = [decode_event(line) for line in read(version)]
    old = oracle.fold(events)
    assert oracle.snapshot(old) == recorded(version, "state")
    model = ReadModel()
    for seq, event in enumerate(events, 1):
        apply_event(model, seq, event)
    same_as_oracle(model, old)
    state = fold(events)
    for pid, pipeline in state.pipelines.items():
        names = shared_fields(pipeline, old.pipelines[pid])
        assert comparable(pipeline, names) == comparable(old.pipelines[pid], names)
    assert (state.last_command_seq, state.next_pipeline_id) == (
        old.last_command_seq,
        old.next_pipeline_id,
    )


@pytest.mark.parametrize("version", WITH_READ_MODELS)
def test_a_log_folds_to_its_recorded_decision_state_and_read_model(version):
    events = read(version)
    assert snapshot(fold(decode_event(line) for line in events)) == recorded(version, "state")
    model = read_model(read(version, "commands"), events)
    assert encoded(model) == recorded(version, "readmodel")


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
