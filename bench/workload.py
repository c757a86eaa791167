"""A realistic event log for benchmarks: experiments whose pipelines run every shard to the end.

Per experiment: its creation, 10 pipelines × 100 shards (assigned, then completed with
metric statistics and a latency histogram), a stop/resume of one pipeline mid-run, and the
completions. The mix is what a real INFERNO_EVT holds: mostly shard events, each a few hundred
bytes of JSON.
"""

from __future__ import annotations

from collections.abc import Iterator

from inferno.events import Names, encode, subject_for
from inferno.events.events import (
    Event,
    ExperimentCompleted,
    ExperimentCreated,
    PipelineCompleted,
    PipelineResumed,
    PipelineStopped,
    ShardAssigned,
    ShardCompleted,
)
from inferno.events.model import MetricStats, PipelineSpec, ShardStats

PIPELINES = 10
SHARDS = 100
# an executor's histogram of 50 rows' latencies (inferno.events.model.LATENCY_BUCKETS_MS)
LATENCY_BUCKETS = [0, 0, 0, 0, 0, 0, 0, 4, 21, 17, 6, 2, 0, 0, 0, 0]


def experiment_events(n: int, first_pipeline: int, first_ic: int, t: float) -> Iterator[Event]:
    exp, ctx = f"exp-{n}", f"ctx-{n}"
    pids = list(range(first_pipeline, first_pipeline + PIPELINES))
    specs = [
        PipelineSpec(
            pipeline_name=f"p{pid}",
            pipeline_type="sim",
            model_config={"model": f"sim-{pid % 3}", "accuracy": 0.8},
            sampling_params={"temperature": 0.0, "max_tokens": 16},
        )
        for pid in pids
    ]
    yield ExperimentCreated(
        at=t,
        ic_id=first_ic,
        created_at=t,
        experiment_id=exp,
        context_id=ctx,
        experiment_name=f"bench-{n}",
        dataset_ref="sha256-" + "ab" * 32,
        row_count=SHARDS * 50,
        num_shards=SHARDS,
        pipelines=specs,
        first_pipeline_id=first_pipeline,
    )
    for shard in range(SHARDS):
        for pid in pids:
            t += 0.001
            executor = f"ex-{pid % 8}"
            yield ShardAssigned(at=t, pipeline_id=pid, shard=shard, attempt=1, executor_id=executor)
            stats = ShardStats(
                rows=50,
                metrics={"exact_match": MetricStats(50, 40.0, 40.0, 0.0, 1.0)},
                prompt_tokens=1500,
                completion_tokens=400,
                duration_s=0.5,
                latency_ms_buckets=LATENCY_BUCKETS,
            )
            yield ShardCompleted(
                at=t, pipeline_id=pid, shard=shard, attempt=1, executor_id=executor, stats=stats
            )
        if shard == SHARDS // 2:
            yield PipelineStopped(at=t, pipeline_id=pids[0], ic_id=first_ic + 1, created_at=t)
            yield PipelineResumed(at=t, pipeline_id=pids[0], ic_id=first_ic + 2, created_at=t)
    for pid in pids:
        yield PipelineCompleted(at=t, pipeline_id=pid)
    yield ExperimentCompleted(at=t, experiment_id=exp)


def event_log(count: int, names: Names) -> list[tuple[str, bytes]]:
    """At least `count` (subject, payload) pairs, whole experiments only, so the log folds."""
    log: list[tuple[str, bytes]] = []
    n = 0
    while len(log) < count:
        events = experiment_events(n, n * PIPELINES + 1, 3 * n + 1, 1_700_000_000.0 + n)
        log.extend((subject_for(names, e), encode(e)) for e in events)
        n += 1
    return log


def sim_experiment(name: str, *, pipelines: int, shards: int, rows: int, latency_ms: float) -> dict:
    """An api request body (POST /api/v1/experiments): `pipelines` sim models over arithmetic."""
    return {
        "experiment_name": name,
        "num_shards": shards,
        "dataset": {
            "rows": [{"id": i, "question": f"{i}+1?", "answer": str(i + 1)} for i in range(rows)]
        },
        "eval": {
            "prompt": "Q: {question}\nA:",
            "scorers": [{"name": "exact_match", "target": "answer"}],
        },
        "pipelines": [
            {
                "pipeline_name": f"p{i}",
                "pipeline_type": "sim",
                "model_config": {
                    "model": f"sim-{i}",
                    "accuracy": 0.8,
                    "latency_ms_per_row": latency_ms,
                },
            }
            for i in range(pipelines)
        ],
    }
