"""The executor process: wiring, the work loop, heartbeats, aborts and shutdown (DESIGN §1, §5).

- Work: the durable pull consumer `executor-<id>` on `names.work(id)`, up to `slots` shards at
  once. A work message (`WorkBatch`) holds the orders one tick gave this executor for one
  pipeline; they run through the slots, and the next message is fetched once fewer orders than
  slots are left. The heartbeat offers `queue` more (`QueueDepth`: by default about 0.2 s of
  its slots' work, at least one a slot; a change is sent at once): the
  scheduler assigns them once every slot is full, and they wait in the consumer, so a freed slot
  fetches its next shard at once instead of waiting for a decision cycle. Every shard ends with
  exactly one final report (finished, errored or aborted); the finished ones of a message go
  out together (`ShardsFinished`, one fsynced message: `Delivery`), and the message is acked
  once all its orders have reported; `msg.in_progress()` keeps a long shard's ack alive. A
  stale attempt is harmless: `decide` ignores its reports, so the executor never coordinates
  with anyone. The consumer is created again whenever the server no longer has it (`WorkPull`:
  its state lives in memory, so a server restart forgets it).
- Heartbeat: `ExecutorInfo` in the EXECUTORS bucket every `heartbeat_ttl_s / 3`.
- Aborts: a core subscription to `pipeline.*.deleted` and `pipeline.*.failed` events cancels that
  pipeline's shards, and its orders still queued once they are fetched. They still report
  `ShardAborted`: `decide` ignores it for a deleted or failed pipeline, and if the event was
  never committed (a batch of a deposed leader, which core subscribers see anyway) it releases
  the shard instead of leaving it in flight forever.
- Shutdown (SIGTERM/SIGINT or `stop`): no new work; in-flight shards get `drain_timeout_s` to
  finish, then are aborted; the KV entry is deleted (the scheduler sees the executor leave at
  once) and the connection drained.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import glob
import importlib.util
import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec
import nats.errors
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from inferno.events.codec import decode_event, encode
from inferno.events.commands import (
    Report,
    ReportIds,
    ShardAborted,
    ShardErrored,
    ShardFinished,
    ShardsFinished,
)
from inferno.events.events import PipelineDeleted, PipelineFailed
from inferno.events.model import ShardStats
from inferno.events.names import Names
from inferno.events.work import (
    ExecutorInfo,
    WorkOrder,
    decode_work,
    report_msg_id,
    report_subject,
)
from inferno.executor import metrics
from inferno.executor.backends import Backends, default_backends
from inferno.executor.backends.base import EndpointUnavailable
from inferno.executor.capabilities import declared_resources, has_gpu
from inferno.executor.datasets import DatasetCache
from inferno.executor.engines import EngineCache, loaded_model
from inferno.executor.fleet_ledgers import Ledgers
from inferno.executor.fleet_limits import FleetRates
from inferno.executor.queue_depth import QueueDepth
from inferno.executor.reporting import (
    ACK_WAIT_S,
    REPORT_LINGER_S,
    Delivery,
    Outbox,
    SendFinished,
)
from inferno.executor.secrets import Secrets
from inferno.executor.shard import PERMANENT, Runtime, run_shard
from inferno.jetstream import Appender, Outgoing, WorkPull, durable_pull
from inferno.jetstream.objects import put_object
from inferno.jetstream.results import INLINE_RESULTS_MAX
from inferno.runtime.bootstrap import open_log
from inferno.runtime.logs import log_effective_config
from inferno.runtime.metrics import MetricsServer
from inferno.runtime.settings import Settings
from inferno.secrets.masking import mask_text

_log = structlog.get_logger("inferno.executor")

MAX_DELIVER = 100  # a message that crashes the executor every time must not loop forever


@dataclass(eq=False)
class _Running:
    order: WorkOrder
    delivery: Delivery
    work: asyncio.Task[ShardFinished]  # the shard itself; aborts cancel this task only
    abort: str | None = None  # why the executor cancelled it


class Executor:
    """One executor's work loop over an open connection; `run` does the wiring around it."""

    def __init__(
        self,
        rt: Runtime,
        *,
        slots: int,
        queue: QueueDepth | None = None,
        poll_s: float = 1.0,
        gpus: list[dict[str, object]] | None = None,
        resources: dict[str, float] | None = None,
        send_finished: SendFinished,
        linger_s: float = REPORT_LINGER_S,
    ) -> None:
        self.rt, self.slots, self.poll_s = rt, slots, poll_s
        self.queue = QueueDepth(slots) if queue is None else queue
        self.heartbeat_due = asyncio.Event()  # set: beat now (the queue or the model changed)
        self._beat_models: list[str] = []  # the loaded models the last heartbeat named
        self.outbox = Outbox(send_finished, self.working, linger_s)
        self._slots = asyncio.Semaphore(slots)  # orders of a message beyond them wait here
        self.gpus = gpus or []
        self.resources = declared_resources({}, self.gpus) if resources is None else resources
        self.running: dict[asyncio.Task[None], _Running] = {}
        self._also_reporting: set[asyncio.Task[None]] = set()
        # pipeline id -> why its orders are aborted, up to which retry (`WorkOrder.retries`):
        # orders of a later retry run, whenever this executor hears of the retry
        self.ended: dict[int, tuple[str, int]] = {}
        self.retries: dict[int, int] = {}  # pipeline id -> the latest retry of its orders seen

    # the work loop

    async def consume(self, pull: WorkPull, stop: asyncio.Event) -> None:
        """Fetch work while there are free slots, until `stop`. Never cancels a fetch: a message
        delivered to a dropped fetch would wait out the ack wait before anyone saw it."""
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                if self.working() >= self.slots:  # a finished shard's report may still wait
                    working = {r.work for r in self.running.values() if not r.work.done()}
                    await asyncio.wait({*working, stopping}, return_when=asyncio.FIRST_COMPLETED)
                    continue
                try:
                    messages = await pull.fetch(1, timeout=self.poll_s)
                except nats.errors.TimeoutError:
                    continue
                except nats.errors.Error as error:  # disconnected: the client reconnects
                    _log.warning("fetch failed", error=repr(error))
                    await asyncio.sleep(self.poll_s)
                    continue
                for msg in messages:
                    if stop.is_set():
                        await msg.nak()  # for the next incarnation, at once
                    else:
                        self._start(msg)
        finally:
            stopping.cancel()

    def _start(self, msg: Msg) -> None:
        try:
            orders = decode_work(msg.data)
        except msgspec.DecodeError as error:
            _log.error("undecodable work order, dropped", error=str(error), data=msg.data[:200])
            asyncio.create_task(msg.term())  # noqa: RUF006 (fire and forget: nothing to wait for)
            return
        delivery = Delivery(msg, len(orders))
        for order in orders:
            if (same := self._running_attempt(order)) is not None:
                self._also_report(same, delivery)
                continue
            # both tasks copy the context as it is here, so every line they log carries the ids
            with structlog.contextvars.bound_contextvars(
                executor_id=self.rt.executor_id,
                experiment_id=order.experiment_id,
                pipeline_id=order.pipeline_id,
                shard=order.shard,
                attempt=order.attempt,
            ):
                running = _Running(order, delivery, asyncio.create_task(self._run(order)))
                task = asyncio.create_task(self._finish(running))
            self.running[task] = running
            task.add_done_callback(self._done)
            pid = order.pipeline_id
            self.retries[pid] = max(self.retries.get(pid, 0), order.retries)
            ended = self.ended.get(pid)
            if ended is not None and order.retries <= ended[1]:
                self._abort(running, ended[0])  # reported like any abort, before it ran a row

    def working(self) -> int:
        """Orders whose shard has not finished: running, or waiting for a slot."""
        return sum(not r.work.done() for r in self.running.values())

    def busy_slots(self) -> int:
        """Slots running a shard: orders of a message beyond the slots wait for one."""
        return min(self.working(), self.slots)

    async def _run(self, order: WorkOrder) -> ShardFinished:
        async with self._slots:
            return await run_shard(self.rt, order)

    def _running_attempt(self, order: WorkOrder) -> asyncio.Task[None] | None:
        """The task that runs `order`'s attempt already, if one does (a few are in flight)."""
        attempt = (order.pipeline_id, order.shard, order.attempt)
        for task, running in self.running.items():
            held = running.order
            if (held.pipeline_id, held.shard, held.attempt) == attempt:
                return task
        return None

    def _also_report(self, finish: asyncio.Task[None], delivery: Delivery) -> None:
        """An order this executor already runs, in another message: a new leader re-sends what
        it finds in flight, without the members of a batch that finished, so under another
        id. The run going on reports once for both messages; running it twice would not."""

        async def reported() -> None:
            try:
                await asyncio.shield(finish)
            except asyncio.CancelledError:
                delivery.abandon()
                raise
            except Exception:  # not reported: both messages are redelivered
                delivery.abandon()
                return
            await delivery.reported()

        task = asyncio.create_task(reported())
        self._also_reporting.add(task)
        task.add_done_callback(self._also_reporting.discard)

    def _done(self, task: asyncio.Task[None]) -> None:
        running = self.running.pop(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            _log.error(
                "shard not reported; its work order will be redelivered",
                pipeline_id=running.order.pipeline_id,
                shard=running.order.shard,
                error=repr(error),
            )

    async def _finish(self, running: _Running) -> None:
        """Wait for the shard, send its one final report, and log its canonical line; the
        work message is acked once all its orders have reported."""
        order, delivery = running.order, running.delivery
        started = time.monotonic()
        rows = order.row_end - order.row_start
        try:
            report, fields = await self._outcome(running)
            if isinstance(report, ShardFinished):
                deeper = self.queue.ran(report.stats.duration_s, loaded_model(order.spec))
                if deeper or self.rt.engines.loaded_models != self._beat_models:
                    self.heartbeat_due.set()  # the scheduler queues by both
                await self.outbox.finished(report)
                rows = report.stats.rows
            else:
                await self.rt.report(report)
                await self.outbox.settle()
        except BaseException:
            delivery.abandon()
            raise
        await delivery.reported()
        emit = _log.warning if fields["outcome"] == "errored" else _log.info
        emit("shard", rows=rows, duration_s=round(time.monotonic() - started, 3), **fields)

    async def _outcome(self, running: _Running) -> tuple[Report, dict[str, object]]:
        """The shard's final report, and what its canonical line says."""
        order = running.order
        ids: ReportIds = {
            "executor_id": self.rt.executor_id,
            "pipeline_id": order.pipeline_id,
            "shard": order.shard,
            "attempt": order.attempt,
        }
        try:
            finished = await running.work
        except asyncio.CancelledError:
            if running.abort is None or asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise  # not an abort: someone cancelled the executor itself
            metrics.shard_ended("aborted")
            return ShardAborted(**ids, at=time.time()), {
                "outcome": "aborted",
                "reason": running.abort,
            }
        except Exception as error:
            if running.abort is not None:  # e.g. EngineAborted at shutdown
                metrics.shard_ended("aborted")
                aborted = ShardAborted(**ids, at=time.time())
                return aborted, {"outcome": "aborted", "reason": running.abort}
            permanent = isinstance(error, PERMANENT)
            text = str(error) if permanent else f"{type(error).__name__}: {error}"
            text = mask_text(text)  # to INFERNO_EXEC and the log: it may quote a secret
            fields: dict[str, object] = {"outcome": "errored", "error": text}
            fields["retryable"] = not permanent
            if not permanent and not isinstance(error, EndpointUnavailable):
                fields["exc_info"] = error  # a bug: the traceback helps (an outage: no)
            metrics.shard_ended("errored")
            return ShardErrored(**ids, at=time.time(), error=text, retryable=not permanent), fields
        metrics.shard_ended("finished", finished.stats)
        return finished, {"outcome": "finished", "metrics": _means(finished.stats)}

    # aborts

    async def on_pipeline_event(self, msg: Msg) -> None:
        try:
            event = decode_event(msg.data)
        except msgspec.DecodeError:
            return
        if isinstance(event, PipelineDeleted | PipelineFailed):
            self.abort_pipeline(event.pipeline_id, f"pipeline {event.kind}")

    def abort_pipeline(self, pipeline_id: int, reason: str) -> None:
        self.ended[pipeline_id] = (reason, self.retries.get(pipeline_id, 0))
        for running in self.running.values():
            if running.order.pipeline_id == pipeline_id:
                self._abort(running, reason)

    def _abort(self, running: _Running, reason: str) -> None:
        if running.abort is None:
            running.abort = reason
            running.work.cancel()

    async def drain(self, timeout_s: float) -> None:
        """Let in-flight shards finish for up to `timeout_s`, then abort what is left."""
        if self.running:
            await asyncio.wait(set(self.running), timeout=timeout_s)
        if not self.running:
            return
        for running in self.running.values():
            self._abort(running, "executor shutting down")
        await self.rt.engines.abort()  # cancelling does not stop work outside the event loop
        # cancel again until they are gone: on Python 3.11 a `wait_for` inside nats-py can
        # swallow a cancel that arrives together with a reply
        while late := set(self.running):
            await asyncio.wait(late, timeout=1.0)
            for running in self.running.values():
                running.work.cancel()

    # heartbeat

    def info(self, backends: list[str], started_at: float) -> ExecutorInfo:
        self._beat_models = self.rt.engines.loaded_models
        return ExecutorInfo(
            executor_id=self.rt.executor_id,
            backends=backends,
            slots=self.slots,
            queue=self.queue.orders,
            busy=self.busy_slots(),
            loaded_models=self._beat_models,
            has_gpu=has_gpu(self.resources),
            gpus=self.gpus,
            resources=self.resources,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            started_at=started_at,
            heartbeat_at=time.time(),
        )


def local_gpus() -> list[dict[str, object]]:
    """The GPUs torch sees, for the heartbeat: [{"index", "name", "memory_mb"}]. torch is
    imported only where a GPU device node exists: the import takes seconds, and a host without
    one has nothing to report."""
    if not (glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/kfd")):
        return []
    if importlib.util.find_spec("torch") is None:
        return []
    import torch

    if not torch.cuda.is_available():
        return []
    devices = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
    return [
        {"index": i, "name": props.name, "memory_mb": props.total_memory // 2**20}
        for i, props in enumerate(devices)
    ]


def _packed(reports: list[ShardFinished], limit: int) -> list[list[ShardFinished]]:
    """Reports in messages of up to about `limit` bytes of results each (every report's own
    results fit in one: `Runtime.inline_results_max`), in their order."""
    parts: list[list[ShardFinished]] = []
    size = 0
    for report in reports:
        weight = sum(len(row) for row in report.results) + len(report.results)
        if not parts or size + weight > limit:
            parts.append([])
            size = 0
        parts[-1].append(report)
        size += weight
    return parts


def _means(stats: ShardStats) -> dict[str, float]:
    return {name: round(m.total / m.count, 4) for name, m in stats.metrics.items() if m.count}


async def _heartbeat(
    kv: KeyValue, executor: Executor, backends: list[str], every_s: float, leaving: asyncio.Event
) -> None:
    """Until `leaving` is set; at once whenever `executor.heartbeat_due` is (the queue it offers
    or the model it has loaded changed). Ended by the event, not by cancelling: on Python 3.11
    a cancel that lands as a `kv.put` reply arrives is swallowed by `wait_for` inside nats-py."""
    started_at = time.time()
    due = executor.heartbeat_due
    while not leaving.is_set():
        due.clear()
        try:
            await kv.put(executor.rt.executor_id, encode(executor.info(backends, started_at)))
        except nats.errors.Error as error:
            _log.warning("heartbeat failed", error=repr(error))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(due.wait(), every_s)


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def run(
    settings: Settings,
    *,
    executor_id: str,
    slots: int,
    queue: int | None = None,
    stop: asyncio.Event | None = None,
    backends: Backends | None = None,
    cache_dir: Path | None = None,
    batch_size: int = 16,
    progress_every_s: float = 1.0,
    drain_timeout_s: float = 30.0,
    poll_s: float = 1.0,
    metrics_port: int = 0,
    inline_results_max: int = INLINE_RESULTS_MAX,
    report_linger_s: float = REPORT_LINGER_S,
) -> None:
    """Run an executor until `stop` is set (default: until SIGTERM or SIGINT); serve /metrics
    on `settings.metrics_host`:`metrics_port` (0: not at all). `queue`: orders held beyond the
    slots (None: by how long its shards run, `queue_depth`). `inline_results_max`: bytes of a
    shard's results sent in its report (more go to INFERNO_RESULTS; 0: always there).
    `report_linger_s`: how long a finished shard's report may wait for the others of the
    executor (`reporting.Outbox`)."""
    if slots < 1:
        raise ValueError(f"slots must be at least 1, not {slots}")
    if queue is not None and queue < 0:
        raise ValueError(f"queue must not be negative, not {queue}")
    names = Names(settings.namespace)
    names.work(executor_id)  # validates the id before anything connects
    backends = default_backends() if backends is None else backends
    advertised = sorted(name for name, backend in backends.items() if backend.available())
    settings = dataclasses.replace(settings, executor_id=executor_id)
    queued = "auto" if queue is None else queue
    log_effective_config(_log.bind(slots=slots, queue=queued, backends=advertised), settings)
    stop = _stop_on_signals() if stop is None else stop

    async with contextlib.AsyncExitStack() as resources:  # released in reverse order
        log = await open_log(settings, f"executor-{executor_id}")
        nc, js = log.nc, log.js
        resources.push_async_callback(_close, nc)
        appender = Appender(nc)

        async def report(r: Report | ShardsFinished) -> None:
            outgoing = Outgoing(report_subject(names, r), encode(r), report_msg_id(r))
            await appender.append(names.exec_stream, [outgoing])

        async def send_finished(reports: list[ShardFinished]) -> None:
            for part in _packed(reports, nc.max_payload // 2):
                one = ShardsFinished(executor_id=executor_id, at=time.time(), reports=part)
                await report(part[0] if len(part) == 1 else one)

        fleet = None
        if settings.rate_limits == "fleet":
            ledgers = Ledgers(await js.key_value(names.limits_bucket))
            fleet = FleetRates(ledgers, names, executor_id, settings.heartbeat_ttl_s)
        engines = EngineCache(backends, fleet)
        resources.push_async_callback(engines.aclose)
        rt = Runtime(
            executor_id=executor_id,
            engines=engines,
            datasets=DatasetCache(js, names, cache_dir=cache_dir),
            store_results=functools.partial(put_object, js, names.results_store),
            report=report,
            secrets=Secrets(await js.key_value(names.secrets_bucket)),
            batch_size=batch_size,
            progress_every_s=progress_every_s,
            scorer_modules=frozenset(settings.scorer_modules),
            inline_results_max=min(inline_results_max, nc.max_payload // 2),
        )
        gpus = await asyncio.to_thread(local_gpus)
        declared = declared_resources(dict(settings.executor_resources), gpus)
        executor = Executor(
            rt,
            slots=slots,
            queue=QueueDepth(slots, queue),
            poll_s=poll_s,
            gpus=gpus,
            resources=declared,
            send_finished=send_finished,
            linger_s=report_linger_s,
        )
        _log.info("executor resources", slots=slots, **declared)
        consumer = f"executor-{executor_id}"
        subscribe = functools.partial(
            durable_pull,
            js,
            names.work_stream,
            consumer,
            filter_subject=names.work(executor_id),
            ack_wait=ACK_WAIT_S,
            max_deliver=MAX_DELIVER,
        )
        pull = WorkPull(subscribe, consumer)
        await pull.open()
        resources.push_async_callback(pull.close)  # before the connection drains
        if metrics_port:
            live = metrics.SlotsCollector(executor)
            exporter = await MetricsServer(
                settings.metrics_host,
                metrics_port,
                live=live,
                refresh=lambda: live.refresh(js, names.work_stream, consumer),
            ).start()
            resources.push_async_callback(exporter.stop)
        for kind in ("deleted", "failed"):
            aborts = await nc.subscribe(
                names.pipeline_evt("*", kind), cb=executor.on_pipeline_event
            )
            resources.push_async_callback(aborts.unsubscribe)
        kv = await js.key_value(names.executors_bucket)
        leaving = asyncio.Event()
        heartbeat = asyncio.create_task(
            _heartbeat(kv, executor, advertised, settings.heartbeat_ttl_s / 3, leaving)
        )
        resources.push_async_callback(_leave, kv, executor, heartbeat, leaving)
        _log.info("executor ready", executor_id=executor_id)
        try:
            await executor.consume(pull, stop)
            _log.info("executor stopping", executor_id=executor_id, in_flight=len(executor.running))
            await executor.drain(drain_timeout_s)
        finally:
            if executor.running:  # run() itself was cancelled: abort, report, ack
                await executor.drain(0)
    _log.info("executor stopped", executor_id=executor_id)


async def _leave(
    kv: KeyValue, executor: Executor, heartbeat: asyncio.Task[None], leaving: asyncio.Event
) -> None:
    """Stop heartbeating and delete the entry: the scheduler sees the executor go at once."""
    leaving.set()
    executor.heartbeat_due.set()  # wakes the heartbeat, which sees it is leaving
    await heartbeat
    with contextlib.suppress(nats.errors.Error):
        await kv.delete(executor.rt.executor_id)


async def _close(nc: NATS) -> None:
    if not nc.is_closed:
        await nc.drain()
