"""JSON encoding of the stored unions, and where each event goes in INFERNO_EVT.

One Decoder per union, built once: msgspec decoders are the fast path of every replay.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from inferno.events.commands import AnyCommand, AnyReport
from inferno.events.events import (
    AnyEvent,
    BudgetExhausted,
    BudgetSet,
    Event,
    ExperimentCompleted,
    ExperimentCreated,
    ExperimentExtended,
    OperationCompleted,
    OperationFailed,
    OperationStarted,
    PipelineCompleted,
    PipelineCreated,
    PipelineDeleted,
    PipelineFailed,
    PipelinePruned,
    PipelineResumed,
    PipelineRetried,
    PipelineStopped,
    ShardAssigned,
    ShardCompleted,
    ShardFailed,
    ShardReleased,
    ShardsAssigned,
    ShardsCompleted,
)
from inferno.events.names import Names


class UnknownEvent(msgspec.Struct, frozen=True):
    """An event type this code does not know (written by a newer version): folds skip it."""

    type: str


class _Envelope(msgspec.Struct):
    type: str = ""


_encoder = msgspec.json.Encoder()
_event_decoder = msgspec.json.Decoder(AnyEvent)
_envelope_decoder = msgspec.json.Decoder(_Envelope)
_command_decoder = msgspec.json.Decoder(AnyCommand)
_report_decoder = msgspec.json.Decoder(AnyReport)
_KNOWN_EVENT_TAGS = frozenset(t.__struct_config__.tag for t in AnyEvent.__args__)

encode = _encoder.encode


def decode_event(data: bytes) -> AnyEvent | UnknownEvent:
    """Decode one stored event; an unknown tag yields `UnknownEvent` instead of an error."""
    try:
        return _event_decoder.decode(data)
    except msgspec.ValidationError:
        tag = _envelope_decoder.decode(data).type
        if tag and tag not in _KNOWN_EVENT_TAGS:
            return UnknownEvent(tag)
        raise


def decode_command(data: bytes) -> AnyCommand:
    return _command_decoder.decode(data)


def decode_report(data: bytes) -> AnyReport:
    return _report_decoder.decode(data)


_SUBJECTS: dict[type[Event], Callable[[Names, Event], str]] = {}


def _route(*types: type[Event]) -> Callable[[Callable[[Names, Event], str]], None]:
    def register(build: Callable[[Names, Event], str]) -> None:
        for t in types:
            _SUBJECTS[t] = build

    return register


@_route(OperationStarted, OperationCompleted, OperationFailed)
def _op_subject(names: Names, e: Event) -> str:
    return names.op_evt(e.ic_id, e.kind)  # type: ignore[attr-defined]


@_route(ExperimentCreated, ExperimentExtended, ExperimentCompleted)
def _experiment_subject(names: Names, e: Event) -> str:
    return names.experiment_evt(e.experiment_id, e.kind)  # type: ignore[attr-defined]


@_route(
    PipelineCreated,
    PipelineStopped,
    PipelinePruned,
    BudgetExhausted,
    PipelineResumed,
    PipelineRetried,
    PipelineDeleted,
    PipelineCompleted,
    PipelineFailed,
)
def _pipeline_subject(names: Names, e: Event) -> str:
    return names.pipeline_evt(e.pipeline_id, e.kind)  # type: ignore[attr-defined]


@_route(BudgetSet)
def _budget_subject(names: Names, e: Event) -> str:
    assert isinstance(e, BudgetSet)
    if e.pipeline_id is not None:
        return names.pipeline_evt(e.pipeline_id, e.kind)
    return names.experiment_evt(e.experiment_id, e.kind)


@_route(ShardAssigned, ShardCompleted, ShardReleased, ShardFailed)
def _shard_subject(names: Names, e: Event) -> str:
    return names.shard_evt(e.pipeline_id, e.shard, e.kind)  # type: ignore[attr-defined]


@_route(ShardsAssigned, ShardsCompleted)
def _executor_subject(names: Names, e: Event) -> str:
    return names.executor_evt(e.executor_id, e.kind)  # type: ignore[attr-defined]


def subject_for(names: Names, event: Event) -> str:
    return _SUBJECTS[type(event)](names, event)
