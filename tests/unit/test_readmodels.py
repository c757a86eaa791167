"""The read models and the decision state show what the one `State` of before showed.

The oracle is that projection (tests/oracle/projection_v0.py: `note_command` + `evolve` over
CMD and EVT). It needs events as they were written then, with the command's issue time and, on a
failure, its operation and ids copied in; `legacy` makes those copies, so each random history
exists in both forms: as the old code wrote it and as `decide` writes it now.
"""

from __future__ import annotations

import random
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from inferno.events import decode_command, decode_event, encode, fold
from inferno.events.commands import AnyCommand
from inferno.events.events import Event, OperationFailed, Outcome
from inferno.readmodels import ReadModel, apply_command, apply_event, encoded
from tests.histories import Run, run, runs
from tests.oracle import projection_v0 as oracle

Entry = tuple[str, int, Any]  # ("cmd" | "evt", stream sequence, command or event)


def written(result: Run) -> list[Entry]:
    """CMD and EVT as the scheduler produced them: each command, then the events decided for it."""
    entries: list[Entry] = []
    evt_seq = 0
    commands = {id(c): ic_id for ic_id, c in result.commands.items()}
    for message, events in result.decisions:
        if id(message) in commands:
            entries.append(("cmd", commands[id(message)], message))
        for event in events:
            evt_seq += 1
            entries.append(("evt", evt_seq, event))
    return entries


def legacy(event: Event, commands: dict[int, AnyCommand]) -> Event:
    """The event as the code before the read models wrote it."""
    if isinstance(event, OperationFailed):
        command = commands[event.ic_id]
        target = command.target
        return msgspec.structs.replace(
            event,
            operation=command.operation,
            pipeline_id=target.pipeline_id,
            context_id=target.context_id,
            experiment_id=target.experiment_id,
            created_at=command.issued_at,
        )
    if isinstance(event, Outcome) and event.ic_id:
        return msgspec.structs.replace(event, created_at=commands[event.ic_id].issued_at)
    return event


def fold_model(entries: list[Entry]) -> ReadModel:
    model = ReadModel()
    for stream, seq, item in entries:
        if stream == "cmd":
            apply_command(model, seq, decode_command(encode(item)))
        else:
            apply_event(model, seq, decode_event(encode(item)))
    return model


def fold_oracle(entries: list[Entry]) -> oracle.State:
    state = oracle.State()
    for stream, seq, item in entries:
        if stream == "cmd":
            oracle.note_command(state, seq, item)
        else:
            oracle.evolve(state, item)
    return state


def comparable(struct: msgspec.Struct, fields: tuple[str, ...]) -> dict[str, Any]:
    return {name: msgspec.to_builtins(getattr(struct, name)) for name in fields}


def shared_fields(new: msgspec.Struct, old: msgspec.Struct) -> tuple[str, ...]:
    """The fields both have; a field the old one lacks (it predates policies, shuffled rows)
    must still be at its default in a log that predates them too."""
    extra = [f for f in new.__struct_fields__ if f not in old.__struct_fields__]
    defaults = type(new)(**{f: getattr(new, f) for f in new.__struct_fields__ if f not in extra})
    assert comparable(new, tuple(extra)) == comparable(defaults, tuple(extra)), extra
    return tuple(f for f in new.__struct_fields__ if f in old.__struct_fields__)


def same_as_oracle(model: ReadModel, old: oracle.State) -> None:
    """Every field the oracle had is in the read model, with the same value."""
    assert model.experiments.keys() == old.experiments.keys()
    for eid, experiment in old.experiments.items():
        names = experiment.__struct_fields__
        assert comparable(model.experiments[eid], names) == comparable(experiment, names)
    assert model.contexts == old.contexts
    assert model.pipelines.keys() == old.pipelines.keys()
    for pid, pipeline in old.pipelines.items():
        skip = ("attempts", "retry_at", "completed")  # the read model maps shard -> report seq
        names = tuple(f for f in pipeline.__struct_fields__ if f not in skip)
        assert comparable(model.pipelines[pid], names) == comparable(pipeline, names), pid
        assert model.pipelines[pid].completed.keys() == pipeline.completed, pid
    assert model.operations.keys() == old.operations.keys()
    for ic_id, op in old.operations.items():
        names = op.__struct_fields__
        assert comparable(model.operations[ic_id], names) == comparable(op, names), ic_id


@settings(max_examples=200, deadline=None)
@given(runs)
def test_the_read_model_equals_the_old_projection_on_random_histories(actions):
    result = run(actions)
    entries = written(result)
    old_log = [
        (stream, seq, legacy(item, result.commands) if stream == "evt" else item)
        for stream, seq, item in entries
    ]
    model = fold_model(entries)
    same_as_oracle(model, fold_oracle(old_log))
    # and an old log reads as the same model as the same history written today
    assert encoded(fold_model(old_log)) == encoded(model)


@settings(max_examples=200, deadline=None)
@given(runs, st.randoms(use_true_random=False))
def test_the_read_model_does_not_depend_on_how_the_two_streams_interleave(actions, rng):
    """The api tails CMD and EVT independently: an outcome may fold before its command."""
    entries = written(run(actions))
    commands = [e for e in entries if e[0] == "cmd"]
    events = [e for e in entries if e[0] == "evt"]
    expected = encoded(fold_model(entries))
    assert encoded(fold_model(events + commands)) == expected
    assert encoded(fold_model(commands + events)) == expected
    assert encoded(fold_model(_interleaved(commands, events, rng))) == expected


def _interleaved(a: list[Entry], b: list[Entry], rng: random.Random) -> list[Entry]:
    """A random merge that keeps the order within each stream."""
    merged, i, j = [], 0, 0
    while i < len(a) or j < len(b):
        if j == len(b) or (i < len(a) and rng.random() < 0.5):
            merged.append(a[i])
            i += 1
        else:
            merged.append(b[j])
            j += 1
    return merged


@settings(max_examples=200, deadline=None)
@given(runs)
def test_the_decision_state_keeps_what_the_old_state_decided_on(actions):
    result = run(actions)
    events = [item for stream, _, item in written(result) if stream == "evt"]
    state = fold(decode_event(encode(e)) for e in events)
    old = oracle.fold(legacy(e, result.commands) for e in events)
    assert state.contexts == old.contexts
    assert (state.next_pipeline_id, state.last_command_seq, state.last_report_seq) == (
        old.next_pipeline_id,
        old.last_command_seq,
        old.last_report_seq,
    )
    for pid, pipeline in state.pipelines.items():
        names = shared_fields(pipeline, old.pipelines[pid])
        assert comparable(pipeline, names) == comparable(old.pipelines[pid], names), pid
    for eid, experiment in state.experiments.items():
        names = shared_fields(experiment, old.experiments[eid])
        assert comparable(experiment, names) == comparable(old.experiments[eid], names)


def test_pending_operations_block_a_refusal_only_on_their_pipeline():
    """`undecided` is what lets the api accept stop-then-resume before the stop is decided."""
    result = run([("create", 2, 3, 3), ("stop", 1)])
    model = fold_model([e for e in written(result) if e[0] == "evt"])
    assert not model.undecided(1)
    apply_command(model, 99, decode_command(b'{"command":"resume_pipeline","pipeline_id":1}'))
    assert model.undecided(1)
    assert not model.undecided(2)
