"""Create the log of DESIGN §2 (streams, KV buckets, object stores), idempotently.

Every service calls `ensure_log` at start, so whichever starts first creates the log and the
others find it. An existing stream whose settings differ from what the code needs is never
changed behind an operator's back: `LogConfigConflict` names what differs, and a person decides.
Only the settings this module sets are compared; anything else an operator tuned is left alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import nats.errors
import structlog
from nats.js import JetStreamContext
from nats.js.api import (
    KeyValueConfig,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, BadRequestError, NotFoundError, ServiceUnavailableError

from inferno.events.names import Names

_log = structlog.get_logger(__name__)

DUPLICATE_WINDOW_S = 120.0
LIMITS_TTL_S = 86_400.0  # a rate-limit ledger untouched a day holds no lease any window counts
_STREAM_NAME_IN_USE = 10058  # "stream name already in use with a different configuration"
# a cluster that is still forming: no suitable peers for placement yet, unavailable, no leader;
# and 10049 "error creating store for stream": the server failed to make the stream's directory
# (seen twice in ~15 full test runs on a busy machine, the server logging that the account's
# store directory was missing during the mkdir); a create that failed stored nothing, so retry
_NOT_YET = {10005, 10008, 10009, 10049}


class LogConfigConflict(RuntimeError):
    """An existing stream, bucket or store has a setting the log needs to be different."""

    def __init__(self, kind: str, name: str, field_name: str, existing: Any, wanted: Any) -> None:
        self.kind, self.name, self.field = kind, name, field_name
        self.existing, self.wanted = existing, wanted
        super().__init__(
            f"{kind} {name}: {field_name} is {existing!r}, Inferno needs {wanted!r}; "
            "change or delete it yourself (it is never updated automatically)"
        )


@dataclass(frozen=True, slots=True)
class _Spec:
    """One thing to ensure: its kind and name as people see them, the backing stream's name,
    the stream settings to compare, and how to create it."""

    kind: str
    name: str
    stream: str
    wanted: Mapping[str, Any]
    create: Callable[[JetStreamContext], Awaitable[Any]]


def _normal(value: Any) -> Any:
    """Make server replies and our configs comparable: enums by value, lists as sets,
    durations to the millisecond (the server stores nanoseconds), 0/None TTLs alike."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, list | tuple):
        return sorted(_normal(v) for v in value)
    if isinstance(value, float):
        return round(value, 3) or None
    return value


def _conflicts(spec: _Spec, existing: StreamConfig) -> None:
    for key, wanted in spec.wanted.items():
        have = getattr(existing, key)
        if _normal(have) != _normal(wanted):
            raise LogConfigConflict(spec.kind, spec.name, key, _normal(have), _normal(wanted))


def _stream(
    name: str, subjects: str, retention: RetentionPolicy, replicas: int, **extra: Any
) -> _Spec:
    config = StreamConfig(
        name=name,
        subjects=[subjects],
        retention=retention,
        storage=StorageType.FILE,
        num_replicas=replicas,
        duplicate_window=DUPLICATE_WINDOW_S,
        **extra,
    )
    wanted = {
        "subjects": [subjects],
        "retention": retention,
        "storage": StorageType.FILE,
        "num_replicas": replicas,
        "duplicate_window": DUPLICATE_WINDOW_S,
        **extra,
    }

    async def create(js: JetStreamContext) -> Any:
        return await js.add_stream(config)

    return _Spec("stream", name, name, wanted, create)


def _kv(bucket: str, replicas: int, ttl_s: float | None) -> _Spec:
    """A KV bucket with history 1. With a TTL, an entry not refreshed within it expires and
    leaves a delete marker (server 2.11+), so watchers see the lapse as it happens."""
    config = KeyValueConfig(
        bucket=bucket,
        history=1,
        ttl=ttl_s,
        replicas=replicas,
        storage=StorageType.FILE,
        direct=True,
        limit_marker_ttl=ttl_s,
    )
    wanted = {
        "max_msgs_per_subject": 1,
        "max_age": ttl_s,
        "num_replicas": replicas,
        "storage": StorageType.FILE,
        "allow_direct": True,
        "subject_delete_marker_ttl": ttl_s,
    }

    async def create(js: JetStreamContext) -> Any:
        return await js.create_key_value(config)

    return _Spec("kv", bucket, f"KV_{bucket}", wanted, create)


def _object_store(bucket: str, replicas: int) -> _Spec:
    config = ObjectStoreConfig(replicas=replicas, storage=StorageType.FILE)
    wanted = {"num_replicas": replicas, "storage": StorageType.FILE}

    async def create(js: JetStreamContext) -> Any:
        return await js.create_object_store(bucket, config=config)

    return _Spec("object store", bucket, f"OBJ_{bucket}", wanted, create)


def _log_specs(
    names: Names, *, replicas: int, heartbeat_ttl_s: float, lease_ttl_s: float
) -> list[_Spec]:
    """Everything in DESIGN §2, in creation order."""
    limits, work_queue = RetentionPolicy.LIMITS, RetentionPolicy.WORK_QUEUE
    return [
        _stream(names.cmd_stream, names.cmd_subjects, limits, replicas, allow_direct=True),
        _stream(
            names.evt_stream,
            names.evt_subjects,
            limits,
            replicas,
            allow_direct=True,
            allow_atomic=True,  # a decision's events are one all-or-nothing append
        ),
        _stream(names.exec_stream, names.exec_subjects, limits, replicas),
        _stream(names.work_stream, names.work_subjects, work_queue, replicas),
        _kv(names.executors_bucket, replicas, heartbeat_ttl_s),
        _kv(names.leader_bucket, replicas, lease_ttl_s),
        _kv(names.secrets_bucket, replicas, None),
        _kv(names.limits_bucket, replicas, LIMITS_TTL_S),  # fleet rate limits (executor)
        _object_store(names.data_store, replicas),
        _object_store(names.results_store, replicas),
        _object_store(names.snapshots_store, replicas),  # folded state (snapshots.py)
    ]


def _transient(error: Exception) -> bool:
    if isinstance(error, ServiceUnavailableError):
        return True
    if isinstance(error, APIError):
        return error.err_code in _NOT_YET
    return isinstance(error, nats.errors.TimeoutError)


async def _ensure(js: JetStreamContext, spec: _Spec, deadline: float) -> str:
    """`_ensure_once`, retried while the server or cluster is still starting up."""
    loop = asyncio.get_running_loop()
    delay = 0.1
    while True:
        try:
            return await _ensure_once(js, spec)
        except nats.errors.Error as error:
            if not _transient(error) or loop.time() + delay > deadline:
                raise
            _log.info("log not ready, retrying", item=spec.name, error=repr(error))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


async def _ensure_once(js: JetStreamContext, spec: _Spec) -> str:
    try:
        info = await js.stream_info(spec.stream)
    except NotFoundError:
        try:
            await spec.create(js)
            return f"created {spec.kind} {spec.name}"
        except BadRequestError as error:
            if error.err_code != _STREAM_NAME_IN_USE:
                raise
            # another process created it between our look and our create: compare with theirs
            info = await js.stream_info(spec.stream)
    _conflicts(spec, info.config)
    return f"exists {spec.kind} {spec.name}"


async def ensure_log(
    js: JetStreamContext,
    names: Names,
    *,
    replicas: int = 1,
    heartbeat_ttl_s: float = 15.0,
    lease_ttl_s: float = 5.0,
    retry_for: float = 30.0,
) -> list[str]:
    """Create whatever of the log is missing; return one line per item ("created stream X",
    "exists kv Y"). Raises `LogConfigConflict` when something exists with other settings.

    `heartbeat_ttl_s`: an executor entry not refreshed within it expires (EXECUTORS bucket).
    `lease_ttl_s`: a leader lease not renewed within it lapses (LEADER bucket).
    `retry_for`: how long to wait for a server or cluster that is still starting (e.g. "no
    suitable peers for placement" until all nodes of a new cluster have joined).
    """
    if heartbeat_ttl_s < 1 or lease_ttl_s < 1:
        raise ValueError("heartbeat_ttl_s and lease_ttl_s must be at least 1 s (server minimum)")
    specs = _log_specs(
        names, replicas=replicas, heartbeat_ttl_s=heartbeat_ttl_s, lease_ttl_s=lease_ttl_s
    )
    deadline = asyncio.get_running_loop().time() + retry_for
    return [await _ensure(js, spec, deadline) for spec in specs]
