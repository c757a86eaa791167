"""Backend config keys, checked before a command is appended (`inferno.events.backend_options`).

A pipeline whose config names a key its backend does not read would fail at its first shard;
refused here instead, with a 400 naming the key, nothing reaches the log. A clone is checked as
the pipeline it makes: its parent's spec with the changes (dicts merged key by key, as `decide`
does), so an inherited key that the new pipeline_type does not read is named too.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec

from inferno.api.errors import bad_field
from inferno.events.backend_options import unknown_option
from inferno.events.commands import AnyCommand, CloneIntoContext, ClonePipeline, CreateExperiment
from inferno.events.model import PipelineSpec
from inferno.readmodels import ReadModel

_MERGED = ("model_config", "sampling_params", "client_config")


def _specs(model: ReadModel, command: AnyCommand) -> Iterator[tuple[str, PipelineSpec]]:
    """(field prefix, spec) of each pipeline `command` would create."""
    if isinstance(command, CreateExperiment):
        for i, spec in enumerate(command.pipelines):
            yield f"pipelines.{i}.", spec
    elif isinstance(command, CloneIntoContext):
        yield "", command.spec
    elif isinstance(command, ClonePipeline) and command.pipeline_id in model.pipelines:
        parent, changes = model.pipelines[command.pipeline_id].spec, command.changes
        merged = {
            knob: {**getattr(parent, knob), **(getattr(changes, knob) or {})} for knob in _MERGED
        }
        kind = changes.pipeline_type or parent.pipeline_type
        yield "", msgspec.structs.replace(parent, pipeline_type=kind, **merged)


def check_backend_options(model: ReadModel, command: AnyCommand) -> None:
    """A 400 naming the first config key a new pipeline's backend does not read."""
    for prefix, spec in _specs(model, command):
        if (unknown := unknown_option(spec)) is not None:
            field, reason = unknown
            raise bad_field(prefix + field, reason)
