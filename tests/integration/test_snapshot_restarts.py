"""A scheduler and an api restarted from a snapshot fold to exactly the state a full replay gives
(canonical encodings compared), with more of the log appended past the snapshot, and a corrupt
snapshot makes them replay the whole log instead."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import structlog
from nats.js import JetStreamContext

from inferno.api.projection import Projection
from inferno.events import State, decode_event, encode, evolve, snapshot, subject_for
from inferno.events.commands import (
    ClonePipeline,
    Command,
    CreateExperiment,
    ResumePipeline,
    StopPipeline,
)
from inferno.events.events import (
    Event,
    ExperimentCreated,
    PipelineCreated,
    PipelineResumed,
    PipelineStopped,
    ShardAssigned,
    ShardCompleted,
)
from inferno.events.model import MetricStats, PipelineChanges, PipelineSpec, ShardStats
from inferno.events.names import Names
from inferno.jetstream import Cadence, SnapshotStore, ensure_log, replay
from inferno.readmodels import encoded
from inferno.runtime.settings import Settings
from inferno.scheduler.leader import Status
from inferno.scheduler.service import run
from tests.waiting import until

PIPELINES, SHARDS = 3, 4
EVERY_EVENT = Cadence(every_events=1, every_s=3600)


def experiment(n: int) -> Iterator[Command | Event]:
    """Experiment `n` as the log holds it: its commands (ic_id = CMD sequence, 4 each) and the
    events that decided them, shards completed with statistics, the last shard still in flight."""
    exp, ctx, ic, first = f"exp-{n}", f"ctx-{n}", 4 * n + 1, 1 + n * (PIPELINES + 1)
    pids = list(range(first, first + PIPELINES))
    specs = [PipelineSpec(pipeline_name=f"p{p}", pipeline_type="sim") for p in pids]
    shape = {"dataset_ref": "sha256-" + "cd" * 32, "row_count": 40, "num_shards": SHARDS}
    yield CreateExperiment(
        experiment_id=exp, context_id=ctx, experiment_name=exp, pipelines=specs, **shape
    )
    yield ExperimentCreated(
        ic_id=ic,
        experiment_id=exp,
        context_id=ctx,
        experiment_name=exp,
        pipelines=specs,
        first_pipeline_id=first,
        **shape,
    )
    stats = ShardStats(rows=10, metrics={"em": MetricStats(10, 7.0, 7.0, 0.0, 1.0)})
    for shard in range(SHARDS):
        for pid in pids:
            yield ShardAssigned(pipeline_id=pid, shard=shard, attempt=1, executor_id="ex-1")
            if shard < SHARDS - 1:
                yield ShardCompleted(
                    pipeline_id=pid, shard=shard, attempt=1, executor_id="ex-1", stats=stats
                )
    yield StopPipeline(pipeline_id=pids[0], actor="ana", reason="diverging")
    yield PipelineStopped(pipeline_id=pids[0], ic_id=ic + 1)
    yield ResumePipeline(pipeline_id=pids[0], actor="ana")
    yield PipelineResumed(pipeline_id=pids[0], ic_id=ic + 2)
    yield ClonePipeline(pipeline_id=pids[1], changes=PipelineChanges(pipeline_name="c"))
    spec = PipelineSpec(pipeline_name="c", pipeline_type="sim")
    yield PipelineCreated(
        ic_id=ic + 3,
        pipeline_id=first + PIPELINES,
        experiment_id=exp,
        context_id=ctx,
        spec=spec,
        parent_pipeline_id=pids[1],
        source="clone",
    )


async def append(js: JetStreamContext, names: Names, *experiments: int) -> None:
    for n in experiments:
        for message in experiment(n):
            if isinstance(message, Command):
                await js.publish(message.subject(names), encode(message))
            else:
                await js.publish(subject_for(names, message), encode(message))


async def full_replay(js: JetStreamContext, names: Names) -> State:
    state = State()
    await replay(js, names.evt_stream, lambda data, _seq: evolve(state, decode_event(data)))
    return state


async def corrupt_newest(js: JetStreamContext, names: Names, model: str) -> str:
    name = (await SnapshotStore(js, names).available(model))[0]
    store = await js.object_store(names.snapshots_store)
    blob = bytearray((await store.get(name)).data)
    blob[-1] ^= 0xFF
    await store.put(name, bytes(blob))
    return name


# the scheduler


async def run_until_rebuilt(settings: Settings) -> Status:
    """Run a scheduler until it leads with its state rebuilt, then stop it cleanly (the log
    holds nothing it decides on meanwhile: no executors, no commands to decide)."""
    stop, status = asyncio.Event(), Status()
    task = asyncio.create_task(run(settings, scheduler_id="s1", stop=stop, status=status))
    await until(lambda: task.done() or (status.leading and status.state), "leadership", 30)
    stop.set()
    await asyncio.wait_for(task, 30)  # raises what ended it early, if anything did
    return status


async def test_a_scheduler_restarted_from_a_snapshot_folds_what_a_full_replay_folds(
    js, names, nats_url
):
    settings = Settings(
        nats_url=nats_url,
        namespace=names.namespace,
        heartbeat_ttl_s=600,  # the in-flight shards' executor never lapses during the test
        snapshot_every_events=1,
    )
    await ensure_log(js, names, heartbeat_ttl_s=600, lease_ttl_s=settings.lease_ttl_s)
    store = SnapshotStore(js, names)
    await append(js, names, 0, 1)
    first_log = (await js.stream_info(names.evt_stream)).state.last_seq

    stop, status = asyncio.Event(), Status()
    task = asyncio.create_task(run(settings, scheduler_id="s1", stop=stop, status=status))
    await until(lambda: task.done() or store.available("decision"), "a first snapshot", 30)
    stop.set()
    await asyncio.wait_for(task, 30)
    assert status.snapshot_seq == 0  # nothing to start from: a full replay

    await append(js, names, 2, 3)  # past the snapshot
    restarted = await run_until_rebuilt(settings)
    assert restarted.snapshot_seq >= first_log
    assert restarted.appends == 0  # every command was decided before: none is decided again
    full = await full_replay(js, names)
    assert restarted.state is not None
    assert snapshot(restarted.state) == snapshot(full)

    corrupted = await corrupt_newest(js, names, "decision")
    with structlog.testing.capture_logs() as logs:
        fallback = await run_until_rebuilt(settings)
    assert fallback.snapshot_seq == 0
    rejected = [e for e in logs if e["event"] == "snapshot rejected: full replay"]
    assert [(e["name"], e["reason"]) for e in rejected] == [
        (corrupted, "checksum mismatch: the payload is corrupt")
    ]
    assert fallback.state is not None
    assert snapshot(fallback.state) == snapshot(full)


# the api


async def started(js: JetStreamContext, names: Names, *, snapshots: bool) -> Projection:
    store = SnapshotStore(js, names) if snapshots else None
    projection = Projection(js, names, snapshots=store, snapshot_cadence=EVERY_EVENT)
    await projection.start()
    return projection


async def test_an_api_restarted_from_a_snapshot_folds_what_a_full_replay_folds(js, names):
    await ensure_log(js, names)
    cmd, evt = names.cmd_stream, names.evt_stream
    await append(js, names, 0, 1)
    at_snapshot = {s: (await js.stream_info(s)).state.last_seq for s in (cmd, evt)}
    first = await started(js, names, snapshots=True)
    assert first.from_snapshot is None
    writer = first.snapshot_writer
    assert writer is not None
    await until(lambda: writer.saved, "the first api's snapshot", 30)
    await first.stop()

    await append(js, names, 2)  # past the snapshot
    restarted = await started(js, names, snapshots=True)
    full = await started(js, names, snapshots=False)
    try:
        assert restarted.from_snapshot == at_snapshot
        assert encoded(restarted.model) == encoded(full.model)
        await append(js, names, 3)  # while both follow the log
        last_cmd, last_evt = [(await js.stream_info(s)).state.last_seq for s in (cmd, evt)]

        def followed(p: Projection) -> bool:
            return (p.model.cmd_seq, p.model.evt_seq) == (last_cmd, last_evt)

        await until(lambda: followed(restarted) and followed(full), "both tails to follow")
        assert encoded(restarted.model) == encoded(full.model)
    finally:
        await restarted.stop()

    corrupted = await corrupt_newest(js, names, "readmodel")
    with structlog.testing.capture_logs() as logs:
        fallback = await started(js, names, snapshots=True)
    try:
        assert fallback.from_snapshot is None
        rejected = [e for e in logs if e["event"] == "snapshot rejected: full replay"]
        assert [(e["name"], e["reason"]) for e in rejected] == [
            (corrupted, "checksum mismatch: the payload is corrupt")
        ]
        assert encoded(fallback.model) == encoded(full.model)
    finally:
        await fallback.stop()
        await full.stop()
