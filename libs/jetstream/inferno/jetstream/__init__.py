"""JetStream adapters for the log (DESIGN §2, §9): the only code that talks to JetStream itself —
connecting, creating the log, appending decisions, replaying and tailing, durable consumers,
snapshots of folded state.
"""

from inferno.jetstream.append import (
    MAX_BATCH,
    Appender,
    AppendError,
    AppendResult,
    LogUnavailable,
    Outgoing,
    StaleWriter,
)
from inferno.jetstream.connection import connect
from inferno.jetstream.consumers import WorkPull, durable_pull
from inferno.jetstream.layout import LogConfigConflict, ensure_log
from inferno.jetstream.replay import Follower, Handler, follow, parse_ack_subject, replay
from inferno.jetstream.snapshot_writer import DEFAULT_CADENCE, Cadence, SnapshotWriter
from inferno.jetstream.snapshots import Snapshot, SnapshotStore

__all__ = [
    "DEFAULT_CADENCE",
    "MAX_BATCH",
    "AppendError",
    "AppendResult",
    "Appender",
    "Cadence",
    "Follower",
    "Handler",
    "LogConfigConflict",
    "LogUnavailable",
    "Outgoing",
    "Snapshot",
    "SnapshotStore",
    "SnapshotWriter",
    "StaleWriter",
    "WorkPull",
    "connect",
    "durable_pull",
    "ensure_log",
    "follow",
    "parse_ack_subject",
    "replay",
]
