"""Which executors exist, from the EXECUTORS bucket, and what a scheduler tick asks `decide`.

`Roster` keeps an in-memory copy of the bucket, updated by a KV watch, so a tick costs no round
trip. `tick_messages` is pure: the state's in-flight shards per executor, the roster and the clock
give the lapsed executors to expire and the capacity (slots and declared resources) to fill.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

import msgspec
import structlog
from nats.js.kv import KeyValue

from inferno.events.commands import AssignWork, ExpireExecutor
from inferno.events.names import check_token
from inferno.events.resources import in_use
from inferno.events.state import State
from inferno.events.work import ExecutorInfo, executor_info_decoder

_log = structlog.get_logger(__name__)


class Roster:
    """The executors' latest heartbeats; an entry vanishes when its key is deleted, purged or
    expires (the bucket's TTL leaves a marker that the watch reports as a purge)."""

    def __init__(self) -> None:
        self.executors: dict[str, ExecutorInfo] = {}
        self.synced = asyncio.Event()  # the watch has delivered the bucket's initial values
        self._watcher: KeyValue.KeyWatcher | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, kv: KeyValue) -> None:
        self._watcher = await kv.watchall()
        self._task = asyncio.create_task(self._consume(self._watcher), name="roster-watch")

    async def stop(self) -> None:
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                await self._watcher.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _consume(self, watcher: KeyValue.KeyWatcher) -> None:
        async for entry in watcher:
            if entry is None:
                self.synced.set()
            elif entry.operation in ("DEL", "PURGE"):
                if self.executors.pop(entry.key, None) is not None:
                    _log.info("executor gone", executor_id=entry.key, op=entry.operation)
            else:
                self._update(entry.key, entry.value or b"")

    def _update(self, key: str, value: bytes) -> None:
        try:
            info = executor_info_decoder.decode(value)
        except msgspec.DecodeError as error:
            _log.warning("bad executor heartbeat ignored", key=key, error=str(error))
            return
        if info.executor_id != key:
            _log.warning("heartbeat under another executor's key ignored", key=key)
            return
        try:
            check_token(key, "executor id")  # it becomes the work subject's last token
        except ValueError as error:
            _log.warning("executor with an unusable id ignored", key=key, error=str(error))
            return
        if key not in self.executors:
            _log.info(
                "executor joined",
                executor_id=key,
                backends=info.backends,
                slots=info.slots,
                resources=info.resources,
            )
        self.executors[key] = info


def tick_messages(
    state: State,
    executors: Mapping[str, ExecutorInfo],
    *,
    now: float,
    heartbeat_ttl_s: float,
    expire: bool,
) -> tuple[list[ExpireExecutor], AssignWork]:
    """Expire executors that hold shards but whose heartbeat is gone or older than the TTL (only
    when `expire`: a new leader first waits for heartbeats), and offer the live ones' capacity.
    Free slots and resources are counted from the state's own assignments, which never lag."""
    used = in_use(state.pipelines.values())
    alive = {
        eid: info for eid, info in executors.items() if now - info.heartbeat_at <= heartbeat_ttl_s
    }
    expired = (
        [ExpireExecutor(executor_id=eid) for eid in sorted(used) if eid not in alive]
        if expire
        else []
    )
    slots = tuple(info.slot(used.get(eid, {})) for eid, info in sorted(alive.items()))
    return expired, AssignWork(executors=slots)
