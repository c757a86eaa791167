"""JetStream adapters for the log (DESIGN §2, §9). The only part of `inferno.events` that imports
nats: connecting, creating the log, appending decisions, replaying and tailing, durable consumers.
"""

from inferno.events.jetstream.append import (
    MAX_BATCH,
    Appender,
    AppendError,
    AppendResult,
    LogUnavailable,
    Outgoing,
    StaleWriter,
)
from inferno.events.jetstream.bootstrap import LogConfigConflict, ensure_log
from inferno.events.jetstream.connection import connect
from inferno.events.jetstream.consumers import durable_pull
from inferno.events.jetstream.replay import Follower, Handler, follow, parse_ack_subject, replay

__all__ = [
    "MAX_BATCH",
    "AppendError",
    "AppendResult",
    "Appender",
    "Follower",
    "Handler",
    "LogConfigConflict",
    "LogUnavailable",
    "Outgoing",
    "StaleWriter",
    "connect",
    "durable_pull",
    "ensure_log",
    "follow",
    "parse_ack_subject",
    "replay",
]
