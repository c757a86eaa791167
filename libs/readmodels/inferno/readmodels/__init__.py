"""Read models: what people read, folded from INFERNO_CMD and INFERNO_EVT by every reader.

The scheduler decides on `inferno.events.state.State`, which holds only what `decide` reads; the
api, the CLI's audit commands and any other reader fold the same log into a `ReadModel` instead:
pipelines with progress and merged metrics, experiments, and operations (the join of CMD[ic_id]
with the first event that carries the ic_id: who asked, when and why, and how it ended).

    model = ReadModel()
    apply_command(model, cmd_seq, decode_command(data))   # for each INFERNO_CMD message
    apply_event(model, evt_seq, decode_event(data))       # for each INFERNO_EVT message

The two streams may be folded in any interleaving. To see the log as it was at a moment, fold
only the messages stored up to it.
"""

from inferno.readmodels.fold import apply_command, apply_event
from inferno.readmodels.model import (
    FINAL,
    READ_MODEL_VERSION,
    Experiment,
    Operation,
    Pipeline,
    ReadModel,
    encoded,
)

__all__ = [
    "FINAL",
    "READ_MODEL_VERSION",
    "Experiment",
    "Operation",
    "Pipeline",
    "ReadModel",
    "apply_command",
    "apply_event",
    "encoded",
]
