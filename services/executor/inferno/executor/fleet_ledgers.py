"""The LIMITS bucket's edge: rate-limit ledgers (`fleet_window.Ledger`) read and written by
compare-and-set, and the names and batch life of the limits a pipeline is held to."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import NamedTuple

import msgspec
from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from inferno.events.model import PipelineSpec
from inferno.executor.fleet_window import Decision, Ledger, Limits

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Ledger).decode


class Ledgers:
    """The LIMITS bucket: one ledger per limit key, changed by compare-and-set."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def change(self, key: str, change: Callable[[Ledger], Decision]) -> Decision:
        """Apply `change` to the ledger under `key` and store the result, retried on a
        conflicting write; a decision that changes nothing writes nothing."""
        while True:
            try:
                entry = await self._kv.get(key)
            except (KeyNotFoundError, KeyDeletedError):
                entry = None
            ledger = _decode(entry.value) if entry is not None and entry.value else Ledger()
            decision = change(ledger)
            if decision.ledger is ledger:
                return decision
            data = _encode(decision.ledger)
            try:
                if entry is None:
                    await self._kv.create(key, data)
                else:
                    await self._kv.update(key, data, last=entry.revision)
            except KeyWrongLastSequenceError:
                continue  # someone wrote in between: decide again on what they wrote
            return decision

    async def read(self, key: str) -> Ledger:
        try:
            entry = await self._kv.get(key)
        except (KeyNotFoundError, KeyDeletedError):
            return Ledger()
        return _decode(entry.value) if entry.value else Ledger()


class FleetLimit(NamedTuple):
    key: str  # in the LIMITS bucket (`inferno.events.names.Names.limit_key`)
    limits: Limits


def lease_seconds(window_s: float, heartbeat_ttl_s: float) -> float:
    """How long a batch is good for: 1/30 of the window (3% of the limit goes to the lease's
    life), and never longer than a third of the heartbeat TTL."""
    return min(window_s / 30, heartbeat_ttl_s / 3)


def config_digest(spec: PipelineSpec) -> str:
    """Names a pipeline's own limits in the LIMITS bucket: what makes its engine (as
    `engines.engine_key`: pipelines that share an engine share its limits), hashed, since
    client_config may hold a key and only a digest is stored."""
    config = (
        spec.pipeline_type,
        spec.model_config,
        spec.client_config,
        spec.rpm_limit,
        spec.tpm_limit,
        spec.endpoint_limit,
    )
    return hashlib.sha256(msgspec.json.encode(config, order="sorted")).hexdigest()[:32]
