"""The leader lease: key `scheduler` in the LEADER bucket, whose TTL expires a dead leader's key.
Its value, and how readers fold it, are `inferno.events.leadership`.

The lease only decides who *tries* to decide; safety comes from fencing every EVT append with the
last sequence the writer knows (DESIGN §9). So the lease errs on the side of letting go: a leader
whose renewal fails, or whose last successful write is older than the TTL, stops at once.

`kv.create` is not used to acquire: when the bucket's MaxAge expires a key, nats-server 2.11+
leaves a marker with `Nats-Marker-Reason` (not `KV-Operation`), which nats-py's `create` does not
recognise as a deleted key, so a standby would wait out the marker's own TTL too (2 × TTL in all).
Acquiring is the same compare-and-set `create` does — on the subject's last sequence — after
reading that last message ourselves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import msgspec
import nats.errors
import structlog
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.errors import KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from inferno.events.leadership import LEASE_KEY as KEY
from inferno.events.leadership import LeaseValue, lease_value_decoder

_log = structlog.get_logger(__name__)

_DELETED_OPS = ("DEL", "PURGE")
_encode = msgspec.json.Encoder().encode
_decode = lease_value_decoder.decode


def _is_tombstone(msg: RawStreamMsg) -> bool:
    """A delete/purge by a client, or a marker the server left when the key expired."""
    headers = msg.headers or {}
    return headers.get("KV-Operation") in _DELETED_OPS or "Nats-Marker-Reason" in headers


class Lease:
    """One scheduler's view of the lease. `held` is what the decision loop checks before every
    append; `acquire` and `renew` are the only calls that change it (besides local expiry)."""

    def __init__(
        self,
        js: JetStreamContext,
        kv: KeyValue,
        bucket: str,
        scheduler_id: str,
        ttl_s: float,
        clock: Callable[[], float],
    ) -> None:
        self._js, self._kv = js, kv
        self._stream, self._subject = f"KV_{bucket}", f"$KV.{bucket}.{KEY}"
        self.scheduler_id, self.ttl_s = scheduler_id, ttl_s
        self._clock = clock
        self._revision: int | None = None
        self._valid_until = 0.0  # monotonic; the server expires the key later than this
        self._lock = asyncio.Lock()
        self.term = 0
        self.since = 0.0
        self.holder: str | None = None  # who holds it, as last seen by a failed acquire

    @property
    def held(self) -> bool:
        return self._revision is not None and _monotonic() < self._valid_until

    @property
    def remaining_s(self) -> float:
        """How long the lease is surely ours still (0 when it is not held)."""
        return max(self._valid_until - _monotonic(), 0.0) if self._revision is not None else 0.0

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it. `term` = the bucket's last sequence + 1, so terms
        only ever grow, across expiries and restarts."""
        async with self._lock:
            try:
                info = await self._js.stream_info(self._stream)
                last = await self._last()
                if last is not None and not _is_tombstone(last):
                    self.holder = _holder(last)
                    return False
                term, since = info.state.last_seq + 1, self._clock()
                value = _encode(LeaseValue(scheduler_id=self.scheduler_id, since=since, term=term))
                started = _monotonic()
                revision = await self._kv.update(KEY, value, last=last.seq if last else 0)
            except KeyWrongLastSequenceError:
                return False  # another standby was quicker
            except nats.errors.Error as error:
                _log.warning("lease acquire failed", error=repr(error))
                return False
            self._revision, self._valid_until = revision, started + self.ttl_s
            self.term, self.since, self.holder = term, since, self.scheduler_id
            return True

    async def renew(self) -> bool:
        """Extend the lease; False once it is lost (someone else's key, or it expired)."""
        async with self._lock:
            if self._revision is None:
                return False
            value = _encode(
                LeaseValue(scheduler_id=self.scheduler_id, since=self.since, term=self.term)
            )
            for _ in range(2):
                started = _monotonic()
                try:
                    revision = await self._kv.update(KEY, value, last=self._revision)
                except KeyWrongLastSequenceError:
                    # an earlier renewal whose ack was lost may have landed: adopt it and retry
                    try:
                        adopted = await self._adopt_own_write()
                    except nats.errors.Error as error:
                        _log.warning("lease check failed", error=repr(error), term=self.term)
                        return self.held
                    if not adopted:
                        break
                    continue
                except nats.errors.Error as error:
                    _log.warning("lease renewal failed", error=repr(error), term=self.term)
                    return self.held
                self._revision, self._valid_until = revision, started + self.ttl_s
                return True
            _log.warning("lease lost", term=self.term, holder=self.holder)
            self._revision = None
            return False

    async def release(self) -> None:
        """Delete the key if it is still ours, so a standby takes over without waiting the TTL."""
        async with self._lock:
            revision, self._revision = self._revision, None
            if revision is None:
                return
            try:
                await self._kv.delete(KEY, last=revision)
            except nats.errors.Error as error:
                _log.warning("lease release failed; it will expire", error=repr(error))

    async def _last(self) -> RawStreamMsg | None:
        try:
            return await self._js.get_msg(self._stream, subject=self._subject)
        except NotFoundError:
            return None

    async def _adopt_own_write(self) -> bool:
        last = await self._last()
        if last is None or _is_tombstone(last):
            self.holder = None
            return False
        try:
            value = _decode(last.data or b"")
        except msgspec.DecodeError:
            return False
        self.holder = value.scheduler_id
        if value.scheduler_id != self.scheduler_id or value.term != self.term:
            return False
        self._revision = last.seq
        return True


def _holder(msg: RawStreamMsg) -> str | None:
    try:
        return _decode(msg.data or b"").scheduler_id
    except msgspec.DecodeError:
        return None


def _monotonic() -> float:
    return asyncio.get_running_loop().time()
