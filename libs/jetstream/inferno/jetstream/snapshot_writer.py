"""When a service writes a snapshot (snapshots.py), and how without holding up its work.

A service offers a snapshot wherever its state is exactly the fold of the log up to the
sequences it names: the scheduler between appended batches (never with decided events that are
not yet in the log), the api between two folded messages. `SnapshotWriter.offer` encodes then
(the only part that must see the state as it is; docs/benchmarks.md has its cost) and uploads in
a task, one at a time, so an offer while an upload runs is declined and the next one retries.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

from inferno.jetstream.snapshots import SnapshotStore

_log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Cadence:
    """A snapshot is due once `every_events` messages were folded since the last one, or
    `every_s` seconds passed with at least one; `every_events=0` turns snapshots off."""

    every_events: int = 100_000
    every_s: float = 300.0

    def due(self, events_since: int, seconds_since: float) -> bool:
        if self.every_events <= 0 or events_since <= 0:
            return False
        return events_since >= self.every_events or seconds_since >= self.every_s


DEFAULT_CADENCE = Cadence()


class SnapshotWriter:
    """Saves one model's snapshots at `cadence`, counting from the sequences in `since` (those
    of the snapshot the state started from; none after a full replay)."""

    def __init__(
        self,
        store: SnapshotStore,
        model: str,
        model_version: int,
        cadence: Cadence,
        *,
        writer: str,
        since: Mapping[str, int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store, self._model, self._version = store, model, model_version
        self._cadence, self._writer, self._clock = cadence, writer, clock
        self._position = sum((since or {}).values())
        self._since = clock()
        self._task: asyncio.Task[None] | None = None
        self.saved: str | None = None  # the name of the last snapshot stored
        self.encode_s = 0.0  # how long the last encode held up the caller

    def offer(self, sequences: Mapping[str, int], encode: Callable[[], bytes]) -> bool:
        """Encode and start saving a snapshot at `sequences` if one is due and none is being
        saved. Call only where the state is the fold of the log up to `sequences`."""
        if self._task is not None and not self._task.done():
            return False
        position = sum(sequences.values())
        if not self._cadence.due(position - self._position, self._clock() - self._since):
            return False
        started = time.perf_counter()
        payload = encode()
        self.encode_s = time.perf_counter() - started
        previous, self._position, self._since = self._position, position, self._clock()
        self._task = asyncio.create_task(
            self._save(dict(sequences), payload, previous), name=f"snapshot-{self._model}"
        )
        return True

    async def _save(self, sequences: dict[str, int], payload: bytes, previous: int) -> None:
        started = time.perf_counter()
        try:
            self.saved = await self._store.save(
                self._model, self._version, sequences, payload, writer=self._writer
            )
        except Exception as error:  # the next offer tries again; the log is unaffected
            self._position = previous
            _log.warning("snapshot not saved", model=self._model, error=repr(error))
            return
        _log.info(
            "snapshot saved",
            name=self.saved,
            bytes=len(payload),
            encode_ms=round(self.encode_s * 1000, 1),
            save_ms=round((time.perf_counter() - started) * 1000, 1),
        )

    async def wait(self, timeout: float | None = None) -> None:
        """Until the upload in progress (if any) has ended, or `timeout`; a stopping service
        lets it land rather than leave a half-written object (`_save` logs its failures)."""
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=timeout)
