"""The api's read model (`inferno.readmodels`): the log folded and kept current by tailing it.

Commands (INFERNO_CMD) show up as pending operations the moment they are stored; the scheduler's
events (INFERNO_EVT) settle them and carry everything else. The two streams are tailed
independently, which is safe because the read model's fold meets a command and its outcome in
the operation in either order. Executors come from watching the EXECUTORS bucket, and
who leads (`leadership`, for `/readyz`) from watching the lease in the LEADER bucket.

Writers wait here instead of polling: `wait_for_command` until the CMD tail has passed an ic_id
(a write's response comes from the projection), `wait_for_operation` until an operation is final.

With a snapshot store, `start` begins from the newest read-model snapshot and replays only what
came after its sequences; once caught up, the projection offers a snapshot every second (saved
when the cadence says so). Between two folded messages the model is exactly the fold of CMD and
EVT up to `cmd_seq` and `evt_seq`, which is what a snapshot records.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from datetime import datetime

import msgspec
import structlog
from nats.js import JetStreamContext
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from inferno.events import Names, decode_command, decode_event
from inferno.events.leadership import LEASE_KEY, Leadership, lease_value_decoder
from inferno.events.work import ExecutorInfo, executor_info_decoder
from inferno.jetstream import (
    DEFAULT_CADENCE,
    Cadence,
    Follower,
    SnapshotStore,
    SnapshotWriter,
    follow,
    replay,
)
from inferno.readmodels import (
    FINAL,
    READ_MODEL_VERSION,
    Operation,
    ReadModel,
    apply_command,
    apply_event,
)
from inferno.runtime.tasks import cancel_and_wait

_log = structlog.get_logger(__name__)

SNAPSHOT_MODEL = "readmodel"
SNAPSHOT_CHECK_S = 1.0  # how often a caught-up projection offers a snapshot
SNAPSHOT_LANDING_S = 5.0  # how long `stop` waits for a snapshot upload to finish
_model_encoder = msgspec.msgpack.Encoder()
_model_decoder = msgspec.msgpack.Decoder(ReadModel)


class Projection:
    def __init__(
        self,
        js: JetStreamContext,
        names: Names,
        *,
        snapshots: SnapshotStore | None = None,
        snapshot_cadence: Cadence = DEFAULT_CADENCE,
        writer: str = "api",
    ) -> None:
        self._js, self._names = js, names
        self._snapshots, self._cadence, self._writer = snapshots, snapshot_cadence, writer
        self._snapshot_loop: asyncio.Task[None] | None = None
        self.snapshot_writer: SnapshotWriter | None = None
        self.from_snapshot: dict[str, int] | None = None  # the sequences `start` began after
        self.model = ReadModel()
        self.executors: dict[str, ExecutorInfo] = {}
        self.leadership = Leadership()
        self.caught_up = False
        self._followers: list[Follower] = []
        self._watches: dict[KeyValue.KeyWatcher, asyncio.Task[None]] = {}
        self._op_waiters: dict[int, set[asyncio.Future[None]]] = {}
        self._cmd_waiters: dict[int, set[asyncio.Future[None]]] = {}

    # lifecycle

    async def start(self) -> None:
        """Catch up with both streams as they are now (from the newest snapshot, if there is
        one), then tail them from there on."""
        js, names = self._js, self._names
        since = {names.cmd_stream: 0, names.evt_stream: 0}
        if self._snapshots is not None:
            loaded = await self._snapshots.load(
                SNAPSHOT_MODEL, READ_MODEL_VERSION, _model_decoder.decode
            )
            if loaded is not None:
                self.model, self.from_snapshot = loaded.state, loaded.sequences
                since.update(loaded.sequences)
        for stream, handler in (
            (names.cmd_stream, self._on_command),
            (names.evt_stream, self._on_event),
        ):
            last = max(since[stream], (await js.stream_info(stream)).state.last_seq)
            await replay(js, stream, handler, start_seq=since[stream] + 1, until_seq=last)
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
            cmd_seq=self.model.cmd_seq,
            evt_seq=self.model.evt_seq,
            from_snapshot=since,
            operations=len(self.model.operations),
            pipelines=len(self.model.pipelines),
        )
        if self._snapshots is not None:
            self.snapshot_writer = SnapshotWriter(
                self._snapshots,
                SNAPSHOT_MODEL,
                READ_MODEL_VERSION,
                self._cadence,
                writer=self._writer,
                since=since,
            )
            self._snapshot_loop = asyncio.create_task(
                self._offer_snapshots(self.snapshot_writer), name="snapshots"
            )

    async def _offer_snapshots(self, writer: SnapshotWriter) -> None:
        names = self._names
        while True:
            await asyncio.sleep(SNAPSHOT_CHECK_S)
            if self.failure is None:  # a stopped tail would leave the model behind the log
                model = self.model
                sequences = {names.cmd_stream: model.cmd_seq, names.evt_stream: model.evt_seq}
                writer.offer(sequences, functools.partial(_model_encoder.encode, model))

    async def stop(self) -> None:
        self.caught_up = False
        if self._snapshot_loop is not None:
            await cancel_and_wait(self._snapshot_loop)  # snapshot puts can lose a cancel
            self._snapshot_loop = None
        if self.snapshot_writer is not None:
            await self.snapshot_writer.wait(timeout=SNAPSHOT_LANDING_S)
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
        if self.model.cmd_seq >= ic_id:
            return True
        return await self._wait(self._cmd_waiters, ic_id, timeout)

    async def wait_for_operation(self, ic_id: int, timeout: float) -> Operation | None:
        """The operation once it is completed or failed, or as it is after `timeout`."""
        if not self._answered(ic_id) and timeout > 0:
            await self._wait(self._op_waiters, ic_id, timeout)
        return self.model.operations.get(ic_id)

    def _answered(self, ic_id: int) -> bool:
        """Its outcome and its command are both folded: the two tails run apart, and an
        outcome folded first leaves the operation without what it was (operation, target)."""
        op = self.model.operations.get(ic_id)
        return op is not None and op.status in FINAL and self.model.cmd_seq >= ic_id

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
            apply_command(self.model, seq, decode_command(data))
        except msgspec.DecodeError as error:  # e.g. a command type from a newer api: skip it
            _log.warning("unknown command skipped", seq=seq, error=str(error))
            self.model.cmd_seq = seq
        if self._cmd_waiters:
            for ic_id in [i for i in self._cmd_waiters if i <= seq]:
                self._wake(self._cmd_waiters.pop(ic_id))
        if self._op_waiters:  # an outcome that folded before its command
            for ic_id in [i for i in self._op_waiters if i <= seq and self._answered(i)]:
                self._wake(self._op_waiters.pop(ic_id))

    def _on_event(self, data: bytes, seq: int) -> None:
        event = decode_event(data)
        apply_event(self.model, seq, event)
        ic_id = getattr(event, "ic_id", 0)  # the operation this event may have settled
        if ic_id and ic_id in self._op_waiters and self._answered(ic_id):
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
            at = stored_at(entry)
            if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
                self.leadership.ended(at)  # deleted at shutdown, or expired: nobody leads
                continue
            try:
                self.leadership.held(lease_value_decoder.decode(entry.value), at)
            except msgspec.DecodeError as error:
                _log.warning("bad lease value skipped", error=str(error))


def stored_at(entry: KeyValue.Entry) -> float:
    """When the server stored the entry, by its clock (nats-py annotates `created` as an int,
    but it holds the message's datetime)."""
    created: object = entry.created
    return created.timestamp() if isinstance(created, datetime) else time.time()
