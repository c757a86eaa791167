"""The executor service against a real nats-server: heartbeat, shards, reports, results, aborts,
errors and shutdown, driven only through the log (work orders in, reports and objects out)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError

from inferno.datasets.store import dataset_ref, from_jsonl, to_jsonl
from inferno.events.batches import members
from inferno.events.codec import decode_report, encode, subject_for
from inferno.events.commands import (
    AnyReport,
    ShardAborted,
    ShardErrored,
    ShardFinished,
    ShardProgress,
    ShardsFinished,
    ShardStarted,
)
from inferno.events.events import PipelineDeleted
from inferno.events.model import EvalSpec, PipelineSpec, RowOrder, Scorer
from inferno.events.names import Names
from inferno.events.rows import positions_rows
from inferno.events.work import ExecutorInfo, WorkBatch, WorkOrder
from inferno.executor.backends import default_backends
from inferno.executor.backends.base import Backend, GenerationRequest
from inferno.executor.backends.sim import SimConfig, answer
from inferno.executor.datasets import DatasetCache
from inferno.executor.engines import EngineCache
from inferno.executor.queue_depth import MAX_PER_SLOT
from inferno.executor.secrets import Secrets
from inferno.executor.service import Executor, _heartbeat, run
from inferno.executor.shard import Runtime
from inferno.jetstream import Appender, Outgoing, ensure_log, replay
from inferno.runtime.settings import Settings
from tests.results import results_rows
from tests.waiting import until

HEARTBEAT_TTL_S = 3.0
ROWS = [{"id": f"r{i}", "question": f"{i}+1?", "answer": str(i + 1)} for i in range(40)]
EVAL = EvalSpec(prompt="Q: {question}\nA:", scorers=[Scorer(name="exact_match", target="answer")])


async def wait_until(check: Callable[[], Awaitable[Any]], timeout: float = 30.0) -> Any:
    return await until(check, check.__name__, timeout)


async def reports(js: JetStreamContext, names: Names) -> list[AnyReport]:
    """EXEC's reports, a `ShardsFinished` as its members."""
    found: list[AnyReport] = []
    await replay(
        js, names.exec_stream, lambda data, _seq: found.extend(members(decode_report(data)))
    )
    return found


async def stored_reports(js: JetStreamContext, names: Names) -> list[AnyReport]:
    """EXEC's messages as stored."""
    found: list[AnyReport] = []
    await replay(js, names.exec_stream, lambda data, _seq: found.append(decode_report(data)))
    return found


async def heartbeat(js: JetStreamContext, names: Names, executor_id: str) -> ExecutorInfo | None:
    kv = await js.key_value(names.executors_bucket)
    try:
        entry = await kv.get(executor_id)
    except KeyNotFoundError:  # also raised for a deleted key
        return None
    return msgspec.json.decode(entry.value, type=ExecutorInfo) if entry.value else None


@dataclass
class Started:
    executor_id: str
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def stopped(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 10)


@pytest.fixture
async def log(js: JetStreamContext, names: Names) -> JetStreamContext:
    await ensure_log(js, names, heartbeat_ttl_s=HEARTBEAT_TTL_S)
    return js


@pytest.fixture
async def dataset(log: JetStreamContext, names: Names) -> str:
    data = to_jsonl(ROWS)
    store = await log.object_store(names.data_store)
    await store.put(dataset_ref(data), data)
    return dataset_ref(data)


@pytest.fixture
async def start(
    log: JetStreamContext, nats_url: str, names: Names
) -> AsyncIterator[Callable[..., Awaitable[Started]]]:
    """Start `run()` as a task (once its heartbeat is in KV); stopped at teardown."""
    running: list[Started] = []

    async def start_executor(executor_id: str = "ex1", **overrides: Any) -> Started:
        settings = Settings(
            nats_url=nats_url, namespace=names.namespace, heartbeat_ttl_s=HEARTBEAT_TTL_S
        )
        options = {"slots": 2, "poll_s": 0.1, "progress_every_s": 0.0, **overrides}
        stop = asyncio.Event()
        task = asyncio.create_task(run(settings, executor_id=executor_id, stop=stop, **options))
        started = Started(executor_id, stop, task)
        running.append(started)

        async def registered() -> bool:
            if task.done():
                task.result()  # raises what run() raised
            return await heartbeat(log, names, executor_id) is not None

        await wait_until(registered)
        return started

    yield start_executor
    for started in running:
        if not started.task.done():
            await started.stopped()


def order(ref: str, *, pipeline_id: int = 1, shard: int = 0, **changes: Any) -> WorkOrder:
    model_config = {"model": "sim-a", "accuracy": 0.6, **changes.pop("model_config", {})}
    base = WorkOrder(
        experiment_id="exp1",
        pipeline_id=pipeline_id,
        shard=shard,
        attempt=1,
        executor_id="ex1",
        dataset_ref=ref,
        row_start=8,
        row_end=40,
        spec=PipelineSpec(
            pipeline_name=f"p{pipeline_id}",
            pipeline_type="sim",
            model_config=model_config,
            sampling_params={"max_tokens": 4},
        ),
        eval=EVAL,
    )
    return msgspec.structs.replace(base, **changes)


async def send(js: JetStreamContext, names: Names, work: WorkOrder) -> None:
    await js.publish(
        names.work(work.executor_id),
        encode(work),
        stream=names.work_stream,
        headers={"Nats-Msg-Id": work.msg_id},
    )


async def send_batch(js: JetStreamContext, names: Names, orders: list[WorkOrder]) -> None:
    """Orders in one work message, as the scheduler sends a tick's to one executor."""
    work = WorkBatch(orders=orders)
    await js.publish(
        names.work(orders[0].executor_id),
        encode(work),
        stream=names.work_stream,
        headers={"Nats-Msg-Id": work.msg_id},
    )


def of(found: list[AnyReport], kind: type, pipeline_id: int = 1) -> list[Any]:
    return [r for r in found if isinstance(r, kind) and r.pipeline_id == pipeline_id]


async def test_heartbeat_advertises_capabilities_and_leaves_on_stop(start, log, names):
    executor = await start("ex1", slots=3)
    info = await heartbeat(log, names, "ex1")
    assert info is not None
    available = sorted(name for name, b in default_backends().items() if b.available())
    assert "sim" in available
    assert (info.backends, info.slots, info.busy, info.has_gpu) == (available, 3, 0, False)
    assert info.queue == 3  # as many orders held as it has slots, unless told otherwise
    assert info.loaded_models == []
    assert info.pid > 0
    assert info.heartbeat_at >= info.started_at > 0
    await executor.stopped()
    assert await heartbeat(log, names, "ex1") is None


async def test_a_shard_reports_stats_and_writes_results(start, log, names, dataset):
    await start("ex1", batch_size=10)
    work = order(dataset)
    await send(log, names, work)

    async def finished() -> list[ShardFinished]:
        return of(await reports(log, names), ShardFinished)

    [done] = await wait_until(finished)
    found = await reports(log, names)
    assert len(of(found, ShardStarted)) == 1
    assert [p.rows_done for p in of(found, ShardProgress)] == [10, 20, 30]  # none after the last
    assert found.index(of(found, ShardStarted)[0]) < found.index(done)
    assert (done.executor_id, done.shard, done.attempt) == ("ex1", 0, 1)

    config = SimConfig.parse(work.spec.model_config)
    expected = [
        answer(config, GenerationRequest(prompt="", key=str(i), reference=ROWS[i]["answer"]))
        for i in range(8, 40)
    ]
    right = sum(text == ROWS[i]["answer"] for i, text in zip(range(8, 40), expected, strict=True))
    stats = done.stats
    assert stats.rows == 32
    assert stats.metrics["exact_match"].count == 32
    assert stats.metrics["exact_match"].total == right
    assert 0 < right < 32
    assert (stats.prompt_tokens, stats.completion_tokens, stats.errors) == (32 * 3, 32 * 4, 0)
    assert sum(stats.latency_ms_buckets) == 32
    assert stats.duration_s > 0

    assert len(done.results) == 32  # small enough to travel in the report: no object
    assert (await log.stream_info(f"OBJ_{names.results_store}")).state.messages == 0
    lines = await results_rows(log, names, "exp1", 1)
    assert [line["row_index"] for line in lines] == list(range(8, 40))
    assert lines[0]["row_id"] == "r8"
    assert lines[0]["prompt"] == "Q: 8+1?\nA:"
    assert [line["output"] for line in lines] == expected
    assert [line["scores"]["exact_match"] for line in lines] == [
        float(text == ROWS[i]["answer"]) for i, text in zip(range(8, 40), expected, strict=True)
    ]
    assert all(line["simulated"] for line in lines)

    async def acked_and_loaded() -> bool:
        info = await heartbeat(log, names, "ex1")
        work_left = (await log.stream_info(names.work_stream)).state.messages
        return work_left == 0 and info is not None and info.loaded_models == ["sim:sim-a"]

    await wait_until(acked_and_loaded)


async def test_a_shard_shorter_than_the_progress_timer_reports_only_its_finish(
    start, log, names, dataset
):
    await start("ex1", progress_every_s=30.0, queue=0)
    assert (await heartbeat(log, names, "ex1")).queue == 0
    await send(log, names, order(dataset))

    async def finished() -> list[ShardFinished]:
        return of(await reports(log, names), ShardFinished)

    [done] = await wait_until(finished)
    assert done.stats.rows == 32
    assert [type(r) for r in await reports(log, names)] == [ShardFinished]  # finished: started
    assert len(await results_rows(log, names, "exp1", 1)) == 32


async def test_a_shuffled_shard_runs_its_permuted_rows_and_reports_sequence_terms(
    start, log, names, dataset
):
    await start("ex1")
    row_order = RowOrder(seed=5)
    await send(log, names, order(dataset, row_count=len(ROWS), row_order=row_order))

    async def finished() -> list[ShardFinished]:
        return of(await reports(log, names), ShardFinished)

    [done] = await wait_until(finished)
    expected = list(positions_rows(len(ROWS), range(8, 40), row_order))
    lines = await results_rows(log, names, "exp1", 1)
    assert [line["row_index"] for line in lines] == expected  # position order, own indices
    assert [line["row_id"] for line in lines] == [ROWS[i]["id"] for i in expected]
    sequence = done.stats.sequence
    assert sequence is not None
    assert (sequence.start, sequence.rows, set(sequence.low)) == (8, 32, {"exact_match"})
    scores = [line["scores"]["exact_match"] for line in lines]
    assert sequence.low["exact_match"].sum == sequence.high["exact_match"].sum == sum(scores)
    # file order (no row_order) reports no terms: its positions are not a random sample
    await send(log, names, order(dataset, pipeline_id=2))

    async def second() -> list[ShardFinished]:
        return of(await reports(log, names), ShardFinished, pipeline_id=2)

    [plain] = await wait_until(second)
    assert plain.stats.sequence is None


async def test_results_too_large_for_a_report_go_to_the_object_store(start, log, names, dataset):
    await start("ex1", inline_results_max=1000)  # 32 rows of results are ~10 KB
    await send(log, names, order(dataset))

    async def finished() -> list[ShardFinished]:
        return of(await reports(log, names), ShardFinished)

    [done] = await wait_until(finished)
    assert done.results == []
    stored = await (await log.object_store(names.results_store)).get("exp1/1/0.jsonl")
    lines = await results_rows(log, names, "exp1", 1)
    assert from_jsonl(stored.data) == lines
    assert [line["row_index"] for line in lines] == list(range(8, 40))


async def test_deleting_a_pipeline_aborts_only_its_shard(start, log, nc, names, dataset):
    await start("ex1", batch_size=16)
    slow = order(dataset, pipeline_id=1, model_config={"latency_ms_per_row": 100})
    other = order(dataset, pipeline_id=2, model_config={"latency_ms_per_row": 20})
    await send(log, names, slow)
    await send(log, names, other)

    async def started() -> bool:
        return bool(of(await reports(log, names), ShardStarted))

    await wait_until(started)
    await asyncio.sleep(0.2)  # inside its first batch (1.6 s)
    deleted = PipelineDeleted(pipeline_id=1)
    await Appender(nc).append(
        names.evt_stream, [Outgoing(subject_for(names, deleted), encode(deleted), "del-1")]
    )

    async def settled() -> bool:
        found = await reports(log, names)
        return bool(of(found, ShardAborted, 1) and of(found, ShardFinished, 2))

    await wait_until(settled)
    await asyncio.sleep(0.3)
    found = await reports(log, names)
    assert of(found, ShardFinished, 1) == []
    assert len(of(found, ShardAborted, 1)) == 1
    assert of(found, ShardAborted, 2) == []

    async def acked() -> bool:
        return (await log.stream_info(names.work_stream)).state.messages == 0

    await wait_until(acked)


async def test_a_deleted_pipelines_queued_order_is_aborted_without_running(
    start, log, nc, names, dataset
):
    await start("ex1", slots=1, batch_size=16)
    running = order(dataset, shard=0, model_config={"latency_ms_per_row": 100})
    queued = order(dataset, shard=1)
    await send(log, names, running)
    await send(log, names, queued)

    async def started() -> bool:
        return bool(of(await reports(log, names), ShardStarted))

    await wait_until(started)
    deleted = PipelineDeleted(pipeline_id=1)
    await Appender(nc).append(
        names.evt_stream, [Outgoing(subject_for(names, deleted), encode(deleted), "del-1")]
    )

    async def both_aborted() -> list[ShardAborted]:
        aborted = of(await reports(log, names), ShardAborted)
        return aborted if len(aborted) == 2 else []

    assert sorted(r.shard for r in await wait_until(both_aborted)) == [0, 1]
    assert of(await reports(log, names), ShardFinished) == []

    async def acked() -> bool:
        return (await log.stream_info(names.work_stream)).state.messages == 0

    await wait_until(acked)


async def test_failing_shards_report_clear_errors(start, log, names, dataset):
    await start("ex1")
    await send(log, names, order(dataset, eval=EvalSpec(prompt="Q: {missing}")))
    await send(log, names, order(dataset, pipeline_id=2, model_config={"accuracy": 2}))
    await send(log, names, order("sha256-" + "0" * 64, pipeline_id=3))

    async def errored() -> list[ShardErrored]:
        found = [r for r in await reports(log, names) if isinstance(r, ShardErrored)]
        return found if len(found) == 3 else []

    by_pipeline = {r.pipeline_id: r for r in await wait_until(errored)}
    assert "needs field 'missing'" in by_pipeline[1].error
    assert "accuracy" in by_pipeline[2].error
    assert "is not in" in by_pipeline[3].error
    assert not any(r.retryable for r in by_pipeline.values())  # they would fail every time
    assert not any(isinstance(r, ShardFinished) for r in await reports(log, names))


async def test_shutdown_aborts_shards_that_outlast_the_drain_timeout(start, log, names, dataset):
    executor = await start("ex1", drain_timeout_s=0.2)
    await send(log, names, order(dataset, model_config={"latency_ms_per_row": 200}))

    async def started() -> bool:
        return bool(of(await reports(log, names), ShardStarted))

    await wait_until(started)
    await executor.stopped()
    found = await reports(log, names)
    assert len(of(found, ShardAborted)) == 1
    assert of(found, ShardFinished) == []
    assert await heartbeat(log, names, "ex1") is None
    assert (await log.stream_info(names.work_stream)).state.messages == 0


async def test_shutdown_lets_a_short_shard_finish(start, log, names, dataset):
    executor = await start("ex1", drain_timeout_s=5)
    await send(log, names, order(dataset, model_config={"latency_ms_per_row": 10}))

    async def started() -> bool:
        return bool(of(await reports(log, names), ShardStarted))

    await wait_until(started)
    await executor.stopped()
    found = await reports(log, names)
    assert len(of(found, ShardFinished)) == 1
    assert of(found, ShardAborted) == []


async def test_the_process_runs_until_sigterm_and_leaves(log, nats_url, names, tmp_path):
    env = {
        **os.environ,
        "NATS_URL": nats_url,
        "INFERNO_NAMESPACE": names.namespace,
        "INFERNO_HEARTBEAT_TTL_S": str(HEARTBEAT_TTL_S),
        "INFERNO_EXECUTOR_ID": "proc1",
        "INFERNO_EXECUTOR_SLOTS": "4",
        "INFERNO_LOG_FORMAT": "json",
    }
    out = tmp_path / "executor.log"
    with out.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "inferno.executor", env=env, stdout=sink, stderr=sink
        )
    try:

        async def registered() -> ExecutorInfo | None:
            return await heartbeat(log, names, "proc1")

        info = await wait_until(registered, timeout=15)
        assert info.slots == 4
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 15)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
            print(out.read_text())
    assert process.returncode == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    config = next(line for line in lines if line["event"] == "effective_config")
    assert (config["executor_id"], config["slots"], config["service"]) == ("proc1", 4, "executor")
    assert lines[-1]["event"] == "executor stopped"
    assert await heartbeat(log, names, "proc1") is None


class BrokenEngine:
    async def generate(self, requests, sampling):
        raise RuntimeError("CUDA error: device-side assert triggered")

    async def abort(self) -> None:
        return None


@asynccontextmanager
async def open_broken(spec: PipelineSpec) -> AsyncIterator[BrokenEngine]:
    yield BrokenEngine()


async def test_backends_are_pluggable_and_engine_failures_are_retryable(start, log, names, dataset):
    backends = {
        **default_backends(),
        "hf": Backend("hf", open_broken),
        "vllm": Backend("vllm", open_broken, available=lambda: False),
    }
    await start("ex1", backends=backends)
    info = await heartbeat(log, names, "ex1")
    assert info is not None
    assert "vllm" not in info.backends  # advertised only where it is available
    assert {"hf", "sim"} <= set(info.backends)
    work = order(dataset)
    await send(
        log,
        names,
        msgspec.structs.replace(work, spec=msgspec.structs.replace(work.spec, pipeline_type="hf")),
    )

    async def errored() -> list[ShardErrored]:
        return of(await reports(log, names), ShardErrored)

    [report] = await wait_until(errored)
    assert report.error == "RuntimeError: CUDA error: device-side assert triggered"
    assert report.retryable


async def test_a_work_message_of_several_orders_is_reported_in_one_message(
    start, log, names, dataset
):
    """Three orders of three pipelines in one `WorkBatch` through two slots: one
    `ShardsFinished` holds all three (each with its results), and the message is acked once."""
    await start("ex1", slots=2, report_linger_s=60.0)
    await send_batch(log, names, [order(dataset, pipeline_id=pid) for pid in (1, 2, 3)])

    async def reported() -> list[AnyReport]:
        return [r for r in await stored_reports(log, names) if isinstance(r, ShardsFinished)]

    [batch] = await wait_until(reported)
    assert [(r.pipeline_id, r.shard, r.stats.rows) for r in batch.reports] == [
        (1, 0, 32),
        (2, 0, 32),
        (3, 0, 32),
    ]
    for pid in (1, 2, 3):
        rows = await results_rows(log, names, "exp1", pid)
        assert [row["row_index"] for row in rows] == list(range(8, 40))

    async def acked() -> bool:
        info = await log.consumer_info(names.work_stream, "executor-ex1")
        return info.num_ack_pending == 0 and info.num_pending == 0

    await wait_until(acked)
    assert (await log.stream_info(names.work_stream)).state.messages == 0  # work queue: gone


async def test_an_order_sent_again_while_it_runs_runs_once_and_acks_both_messages(
    start, log, nc, names, dataset
):
    """A new leader re-sends a batch without its finished members, under another id: the
    executor, still running the rest, reports each once, for both messages."""
    await start("ex1", slots=2, report_linger_s=0.2)
    slow = order(dataset, pipeline_id=1, model_config={"latency_ms_per_row": 2000})  # 64 s
    quick = order(dataset, pipeline_id=2, row_end=9, model_config={"latency_ms_per_row": 2000})
    await send_batch(log, names, [slow, quick])

    async def quick_reported() -> list[AnyReport]:
        return of(await reports(log, names), ShardFinished, pipeline_id=2)

    await wait_until(quick_reported, timeout=60)
    await send(log, names, slow)  # as the re-send: one order, so its own id

    async def both_held() -> bool:
        info = await log.consumer_info(names.work_stream, "executor-ex1")
        return info.num_ack_pending == 2 and info.num_pending == 0

    await wait_until(both_held, timeout=60)
    held_at = time.time()

    async def beat_since() -> ExecutorInfo | None:
        info = await heartbeat(log, names, "ex1")
        return info if info is not None and info.heartbeat_at > held_at else None

    assert (await wait_until(beat_since, timeout=60)).busy == 1  # one slot: the run goes on
    deleted = PipelineDeleted(pipeline_id=1)  # ends the long run now, as any abort
    await Appender(nc).append(
        names.evt_stream, [Outgoing(subject_for(names, deleted), encode(deleted), "del-1")]
    )

    async def acked() -> bool:
        info = await log.consumer_info(names.work_stream, "executor-ex1")
        return info.num_ack_pending == 0 and info.num_pending == 0

    await wait_until(acked, timeout=60)
    found = await reports(log, names)
    assert len(of(found, ShardAborted, pipeline_id=1)) == 1
    assert not of(found, ShardFinished, pipeline_id=1)


async def test_a_finished_shard_does_not_wait_for_a_long_one_past_the_linger(
    start, log, nc, names, dataset
):
    await start("ex1", slots=2, report_linger_s=0.2)
    # one engine (an executor runs one model at a time): 32 rows of 2 s, and one row
    slow = order(dataset, pipeline_id=1, model_config={"latency_ms_per_row": 2000})
    quick = order(dataset, pipeline_id=2, row_end=9, model_config={"latency_ms_per_row": 2000})
    await send_batch(log, names, [slow, quick])

    async def quick_reported() -> list[AnyReport]:
        return of(await reports(log, names), ShardFinished, pipeline_id=2)

    await wait_until(quick_reported, timeout=60)
    assert not of(await reports(log, names), ShardFinished, pipeline_id=1)  # 64 s to go
    deleted = PipelineDeleted(pipeline_id=1)  # the long one ends now, aborted
    await Appender(nc).append(
        names.evt_stream, [Outgoing(subject_for(names, deleted), encode(deleted), "del-1")]
    )

    async def slow_aborted() -> list[AnyReport]:
        return of(await reports(log, names), ShardAborted, pipeline_id=1)

    await wait_until(slow_aborted, timeout=60)
    stored = await stored_reports(log, names)
    assert not [r for r in stored if isinstance(r, ShardsFinished)]  # the quick one went alone


async def test_an_executor_whose_work_consumer_is_gone_creates_it_again(start, log, names, dataset):
    """The consumer's state is in the server's memory (`WorkPull`): a server restart, or
    `nats consumer rm`, leaves the executor without it, and it must not wait forever."""
    await start("ex1")
    info = await log.consumer_info(names.work_stream, "executor-ex1")
    assert info.config.mem_storage
    await log.delete_consumer(names.work_stream, "executor-ex1")
    await send(log, names, order(dataset))

    async def finished() -> list[ShardFinished]:
        return of(await reports(log, names), ShardFinished)

    [done] = await wait_until(finished)
    assert done.stats.rows == 32

    async def acked() -> bool:
        info = await log.consumer_info(names.work_stream, "executor-ex1")
        return info.num_ack_pending == 0 and info.num_pending == 0

    await wait_until(acked)


async def test_short_shards_deepen_the_queue_offered(start, log, names, dataset):
    """`QueueDepth`: shards of milliseconds ask for the most orders a slot."""
    await start("ex1", slots=2)
    assert (await heartbeat(log, names, "ex1")).queue == 2  # one a slot before any shard ran
    kv = await log.key_value(names.executors_bucket)
    watcher = await kv.watch("ex1")
    await send_batch(log, names, [order(dataset, pipeline_id=p) for p in (1, 2, 3)])

    async def deepened() -> ExecutorInfo:
        while True:
            entry = await watcher.updates(timeout=60)
            if entry is not None and entry.value:
                info = msgspec.json.decode(entry.value, type=ExecutorInfo)
                if info.queue == 2 * MAX_PER_SLOT:
                    return info

    assert (await asyncio.wait_for(deepened(), 60)).slots == 2
    await watcher.stop()


async def test_a_changed_queue_is_sent_at_once_not_at_the_next_beat(log, names):
    """The beat after `heartbeat_due` is set comes now, not 300 s later."""
    runtime = Runtime(
        executor_id="ex1",
        engines=EngineCache(default_backends()),
        datasets=DatasetCache(log, names),
        store_results=_unused,
        report=_unused,
        secrets=Secrets(await log.key_value(names.secrets_bucket)),
    )
    executor = Executor(runtime, slots=2, send_finished=_unused)
    kv = await log.key_value(names.executors_bucket)
    watcher = await kv.watch("ex1")
    leaving = asyncio.Event()
    beating = asyncio.create_task(_heartbeat(kv, executor, ["sim"], 300.0, leaving))

    async def beat() -> ExecutorInfo:
        while True:
            entry = await watcher.updates(timeout=60)
            if entry is not None and entry.value:
                return msgspec.json.decode(entry.value, type=ExecutorInfo)

    assert (await asyncio.wait_for(beat(), 60)).queue == 2
    assert executor.queue.ran(0.001, "sim:sim-a")  # as `_finish` does for each finished shard
    executor.heartbeat_due.set()
    assert (await asyncio.wait_for(beat(), 60)).queue == 2 * MAX_PER_SLOT
    leaving.set()
    executor.heartbeat_due.set()
    await asyncio.wait_for(beating, 60)
    await watcher.stop()


async def _unused(*_args: Any) -> None:
    raise AssertionError("not called in this test")
