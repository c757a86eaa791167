"""A long history, CMD and EVT together, written fast: for benchmarks that restart services on it.

Per experiment, in log order: its create command and `ExperimentCreated`; 10 pipelines x 100
shards assigned, then completed with metric statistics (bench/workload.py); mid-run a stop and a
resume of one pipeline, a clone of another that is deleted again later, each a command in CMD and
the event that decided it (ic_id = the command's CMD sequence, as the scheduler writes them);
then the completions. About 2,020 EVT messages and 5 CMD messages an experiment.

`write_history` sends it as core publishes on one connection, in order, with every 1000th
message awaiting its ack (so at most a few thousand are in flight and the server's ingest queue
never overflows); the counts are checked at the end. Only for a throwaway server without
`sync_interval: always`: this is a benchmark's fixture, not how services append.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterator

from workload import LATENCY_BUCKETS, PIPELINES, SHARDS

from inferno.events import Names, encode, subject_for
from inferno.events.commands import (
    ClonePipeline,
    CreateExperiment,
    DeletePipeline,
    ResumePipeline,
    StopPipeline,
)
from inferno.events.events import (
    ExperimentCompleted,
    ExperimentCreated,
    PipelineCompleted,
    PipelineCreated,
    PipelineDeleted,
    PipelineResumed,
    PipelineStopped,
    ShardAssigned,
    ShardCompleted,
)
from inferno.events.model import MetricStats, PipelineChanges, PipelineSpec, ShardStats

COMMANDS_PER_EXPERIMENT = 5
PIPELINE_IDS_PER_EXPERIMENT = PIPELINES + 1  # and the clone
ACK_EVERY = 1000
ACKS_IN_FLIGHT = 4
STATS = ShardStats(
    rows=50,
    metrics={"exact_match": MetricStats(50, 40.0, 40.0, 0.0, 1.0)},
    prompt_tokens=1500,
    completion_tokens=400,
    duration_s=0.5,
    latency_ms_buckets=LATENCY_BUCKETS,
)


def _spec(pid: int) -> PipelineSpec:
    return PipelineSpec(
        pipeline_name=f"p{pid}",
        pipeline_type="sim",
        model_config={"model": f"sim-{pid % 3}", "accuracy": 0.8},
        sampling_params={"temperature": 0.0, "max_tokens": 16},
    )


def experiment(names: Names, n: int, t: float) -> Iterator[tuple[str, bytes]]:
    """Experiment `n`'s messages, (subject, payload), in the order a real log holds them."""
    exp, ctx = f"exp-{n}", f"ctx-{n}"
    ic = n * COMMANDS_PER_EXPERIMENT + 1
    first = n * PIPELINE_IDS_PER_EXPERIMENT + 1
    pids = list(range(first, first + PIPELINES))
    clone = first + PIPELINES
    specs = [_spec(pid) for pid in pids]
    shape = {"dataset_ref": "sha256-" + "ab" * 32, "row_count": SHARDS * 50, "num_shards": SHARDS}
    command = CreateExperiment(
        experiment_id=exp,
        context_id=ctx,
        experiment_name=f"bench-{n}",
        pipelines=specs,
        issued_at=t,
        actor="bench",
        **shape,  # type: ignore[arg-type]
    )
    yield command.subject(names), encode(command)
    created = ExperimentCreated(
        at=t,
        ic_id=ic,
        experiment_id=exp,
        context_id=ctx,
        experiment_name=f"bench-{n}",
        pipelines=specs,
        first_pipeline_id=first,
        **shape,  # type: ignore[arg-type]
    )
    yield subject_for(names, created), encode(created)
    decisions = {
        SHARDS // 2: [
            (StopPipeline(pipeline_id=pids[0]), PipelineStopped(pipeline_id=pids[0])),
            (ResumePipeline(pipeline_id=pids[0]), PipelineResumed(pipeline_id=pids[0])),
        ],
        SHARDS * 6 // 10: [
            (
                ClonePipeline(pipeline_id=pids[1], changes=PipelineChanges(pipeline_name="c")),
                PipelineCreated(
                    pipeline_id=clone,
                    experiment_id=exp,
                    context_id=ctx,
                    spec=_spec(clone),
                    parent_pipeline_id=pids[1],
                    source="clone",
                ),
            )
        ],
        SHARDS * 7 // 10: [(DeletePipeline(pipeline_id=clone), PipelineDeleted(pipeline_id=clone))],
    }
    for shard in range(SHARDS):
        for pid in pids:
            t += 0.001
            executor = f"ex-{pid % 8}"
            assigned = ShardAssigned(
                at=t, pipeline_id=pid, shard=shard, attempt=1, executor_id=executor
            )
            yield subject_for(names, assigned), encode(assigned)
            done = ShardCompleted(
                at=t, pipeline_id=pid, shard=shard, attempt=1, executor_id=executor, stats=STATS
            )
            yield subject_for(names, done), encode(done)
        for cmd, event in decisions.get(shard, []):
            ic += 1
            cmd.issued_at, cmd.actor, cmd.reason = t, "bench", "benchmark history"
            event.at, event.ic_id = t, ic
            yield cmd.subject(names), encode(cmd)
            yield subject_for(names, event), encode(event)
    for pid in pids:
        completed = PipelineCompleted(at=t, pipeline_id=pid)
        yield subject_for(names, completed), encode(completed)
    finished = ExperimentCompleted(at=t, experiment_id=exp)
    yield subject_for(names, finished), encode(finished)


def history(names: Names, events: int) -> Iterator[tuple[str, bytes]]:
    """Whole experiments until at least `events` EVT messages."""
    n = written = 0
    cmd_prefix = names.cmd_subjects.removesuffix(">")
    while written < events:
        for subject, payload in experiment(names, n, 1_700_000_000.0 + n * 10):
            written += not subject.startswith(cmd_prefix)
            yield subject, payload
        n += 1


async def write_history(nc, names: Names, events: int) -> dict[str, float]:
    """Append `history(names, events)` to an empty log; the counts and how long it took."""
    js = nc.jetstream()
    acks: deque[asyncio.Future] = deque()
    cmd_prefix = names.cmd_subjects.removesuffix(">")
    counts = {names.cmd_stream: 0, names.evt_stream: 0}
    start = time.perf_counter()
    for i, (subject, payload) in enumerate(history(names, events), 1):
        counts[names.cmd_stream if subject.startswith(cmd_prefix) else names.evt_stream] += 1
        if i % ACK_EVERY:
            await nc.publish(subject, payload)
            continue
        acks.append(await js.publish_async(subject, payload))
        if len(acks) > ACKS_IN_FLIGHT:
            await acks.popleft()
    for ack in acks:
        await ack
    await nc.flush()
    elapsed = time.perf_counter() - start
    for stream, expected in counts.items():
        stored = (await js.stream_info(stream)).state.messages
        if stored != expected:
            raise RuntimeError(f"{stream} holds {stored} messages, {expected} were sent")
    total = sum(counts.values())
    return {**counts, "seconds": elapsed, "per_s": total / elapsed}
