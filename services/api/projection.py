"""The api's read model: the log folded into a `State`, kept current by tailing it.

Commands (INFERNO_CMD) show up as pending operations the moment they are stored (`note_command`);
the scheduler's events (INFERNO_EVT) move them on and carry everything else (`evolve`). The two
streams are tailed independently, which is safe because `note_command` never overwrites an
operation the events already started. Executors come from watching the EXECUTORS bucket, and
who leads (`leadership`, for `/readyz`) from watching the lease in the LEADER bucket.

Writers wait here instead of polling: `wait_for_command` until the CMD tail has passed an ic_id
(a write's response comes from the projection), `wait_for_operation` until an operation is final.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime

import msgspec
import structlog
from nats.js import JetStreamContext
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from inferno.events import Names, State, decode_command, decode_event, evolve, note_command
from inferno.events.jetstream import Follower, follow, replay
from inferno.events.leadership import LEASE_KEY, Leadership, lease_value_decoder
from inferno.events.state import Operation
from inferno.events.work import ExecutorInfo, executor_info_decoder

_log = structlog.get_logger(__name__)

FINAL = frozenset({"completed", "failed"})


class Projection:
    def __init__(self, js: JetStreamContext, names: Names) -> None:
        self._js, self._names = js, names
        self.state = State()
        self.executors: dict[str, ExecutorInfo] = {}
        self.leadership = Leadership()
        self.cmd_seq = 0
        self.evt_seq = 0
        self.caught_up = False
        self._followers: list[Follower] = []
        self._watches: dict[KeyValue.KeyWatcher, asyncio.Task[None]] = {}
        self._op_waiters: dict[int, set[asyncio.Future[None]]] = {}
        self._cmd_waiters: dict[int, set[asyncio.Future[None]]] = {}

    # lifecycle

    async def start(self) -> None:
        """Catch up with both streams as they are now, then tail them from there on."""
        js, names = self._js, self._names
        for stream, handler in (
            (names.cmd_stream, self._on_command),
            (names.evt_stream, self._on_event),
        ):
            last = (await js.stream_info(stream)).state.last_seq
            await replay(js, stream, handler, until_seq=last)
            self._followers.append(await follow(js, stream, handler, start_seq=last + 1))
        executors = await (await js.key_value(names.executors_bucket)).watchall()
        self._watches[executors] = asyncio.create_task(
            self._watch_executors(executors), name="executors-watch"
        )
        lease = await (await js.key_value(names.leader_bucket)).watch(LEASE_KEY)
        self._watches[lease] = asyncio.create_task(self._watch_lease(lease), name="lease-watch")
        self.caught_up = True
        _log.info(
            "projection caught up",
            cmd_seq=self.cmd_seq,
            evt_seq=self.evt_seq,
            operations=len(self.state.operations),
            pipelines=len(self.state.pipelines),
        )

    async def stop(self) -> None:
        self.caught_up = False
        for watcher, watch in self._watches.items():
            await watcher.stop()  # ends the watch task's iteration
            with contextlib.suppress(Exception):  # a failed watch was already logged
                await watch
        self._watches.clear()
        for follower in self._followers:
            with contextlib.suppress(Exception):  # a failed tail was already logged
                await follower.stop()
        self._followers.clear()
        for waiters in (*self._op_waiters.values(), *self._cmd_waiters.values()):
            for future in waiters:
                future.cancel()

    @property
    def failure(self) -> str | None:
        """Why the projection stopped following the log, if it did."""
        for follower in self._followers:
            if follower.error is not None:
                return f"projection stopped: {follower.error!r}"
        for watch in self._watches.values():
            if watch.done() and not watch.cancelled() and watch.exception():
                return f"{watch.get_name()} stopped: {watch.exception()!r}"
        return None

    # waiting

    async def wait_for_command(self, ic_id: int, timeout: float = 5.0) -> bool:
        """True once the CMD tail has folded `ic_id`; False after `timeout`."""
        if self.cmd_seq >= ic_id:
            return True
        return await self._wait(self._cmd_waiters, ic_id, timeout)

    async def wait_for_operation(self, ic_id: int, timeout: float) -> Operation | None:
        """The operation once it is completed or failed, or as it is after `timeout`."""
        op = self.state.operations.get(ic_id)
        if (op is None or op.status not in FINAL) and timeout > 0:
            await self._wait(self._op_waiters, ic_id, timeout)
        return self.state.operations.get(ic_id)

    async def _wait(
        self, waiters: dict[int, set[asyncio.Future[None]]], key: int, timeout: float
    ) -> bool:
        future = asyncio.get_running_loop().create_future()
        waiters.setdefault(key, set()).add(future)
        try:
            await asyncio.wait_for(future, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            pending = waiters.get(key)
            if pending is not None:
                pending.discard(future)
                if not pending:
                    del waiters[key]

    @staticmethod
    def _wake(waiters: set[asyncio.Future[None]] | None) -> None:
        for future in waiters or ():
            if not future.done():
                future.set_result(None)

    # folding (called in stream order by replay/follow)

    def _on_command(self, data: bytes, seq: int) -> None:
        try:
            note_command(self.state, seq, decode_command(data))
        except msgspec.DecodeError as error:  # e.g. a command type from a newer api: skip it
            _log.warning("unknown command skipped", seq=seq, error=str(error))
        self.cmd_seq = seq
        if self._cmd_waiters:
            for ic_id in [i for i in self._cmd_waiters if i <= seq]:
                self._wake(self._cmd_waiters.pop(ic_id))

    def _on_event(self, data: bytes, seq: int) -> None:
        event = decode_event(data)
        evolve(self.state, event)
        self.evt_seq = seq
        ic_id = getattr(event, "ic_id", 0)  # the operation this event may have settled
        if ic_id and ic_id in self._op_waiters:
            op = self.state.operations.get(ic_id)
            if op is not None and op.status in FINAL:
                self._wake(self._op_waiters.pop(ic_id))

    async def _watch_executors(self, watcher: KeyValue.KeyWatcher) -> None:
        async for entry in watcher:
            if entry is None:  # end of the initial values
                continue
            if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
                self.executors.pop(entry.key, None)
                continue
            try:
                self.executors[entry.key] = executor_info_decoder.decode(entry.value)
            except msgspec.DecodeError as error:
                _log.warning("bad executor heartbeat skipped", key=entry.key, error=str(error))

    async def _watch_lease(self, watcher: KeyValue.KeyWatcher) -> None:
        async for entry in watcher:
            if entry is None:  # end of the initial values
                continue
            at = _stored_at(entry)
            if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
                self.leadership.ended(at)  # deleted at shutdown, or expired: nobody leads
                continue
            try:
                self.leadership.held(lease_value_decoder.decode(entry.value), at)
            except msgspec.DecodeError as error:
                _log.warning("bad lease value skipped", error=str(error))


def _stored_at(entry: KeyValue.Entry) -> float:
    """When the server stored the entry, by its clock (nats-py annotates `created` as an int,
    but it holds the message's datetime)."""
    created: object = entry.created
    return created.timestamp() if isinstance(created, datetime) else time.time()
