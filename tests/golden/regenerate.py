"""Writes a golden log and what it folds to. Run it only to add a NEW version's files.

    .venv/bin/python tests/golden/regenerate.py v4

Writes commands-<v>.jsonl (INFERNO_CMD, ic_id = line number), events-<v>.jsonl (INFERNO_EVT),
state-<v>.json (the scheduler's decision state) and readmodel-<v>.json (the read model of both).
Never rewrite an existing version's logs: they are what logs written by released code look like,
and `tests/unit/test_golden_log.py` replays every one of them through today's folds. A read
model and the decision state are derived, so when one's shape changes (with
`READ_MODEL_VERSION` / `STATE_VERSION`) its golden file is written again from the same log (v3's,
when `completed` came to map a shard to its report, and when experiments gained `row_order`; v4's
when pipelines could be retried; v3-v5's when budgets came).
(v1 and v2 predate the read models: they have no commands file, and their state file is the one
`State` of tests/oracle/projection_v0.py.)
"""

from __future__ import annotations

import sys
from pathlib import Path

from inferno.events import (
    State,
    decide,
    decode_command,
    decode_event,
    encode,
    evolve,
    fold,
    snapshot,
)
from inferno.events.batches import decide_each, group_assignments, group_completions
from inferno.events.commands import (
    AssignWork,
    CloneIntoContext,
    ClonePipeline,
    CreateExperiment,
    DeletePipeline,
    ExecutorSlot,
    ExpireExecutor,
    ExtendExperiment,
    ResumePipeline,
    RetryPipeline,
    SetBudget,
    ShardErrored,
    ShardFinished,
    ShardsFinished,
    StopPipeline,
)
from inferno.events.model import (
    Budget,
    MetricStats,
    PipelineChanges,
    PipelineSpec,
    Policy,
    PrunePolicy,
    RowOrder,
    Segment,
    ShardStats,
)
from inferno.events.sequences import shard_terms
from inferno.readmodels import ReadModel, apply_command, apply_event, encoded

HERE = Path(__file__).parent
FILES = {"commands": "jsonl", "events": "jsonl", "state": "json", "readmodel": "json"}
FROM_THE_FUTURE = b'{"type":"pipeline_renamed","v":9,"at":7.0,"pipeline_id":1,"name":"new"}'


def scenario() -> tuple[list[bytes], list[bytes]]:
    """A run that produces every event type: create, assign, stop, resume, fail, clone, delete;
    returns the commands and the events."""
    state, log, commands = State(), [], []
    seqs = {"cmd": 0, "rpt": 0}

    def step(message, now, kind=None):
        seq = 0
        if kind:
            seqs[kind] += 1
            seq = seqs[kind]
        if kind == "cmd":
            commands.append(encode(message))
        if isinstance(message, ShardsFinished):  # as the scheduler stores them (v7)
            decided = decide_each(state, message, now=now, seq=seq)
            log.extend(encode(e) for e in group_completions([e for _, es in decided for e in es]))
            return
        events = decide(state, message, now=now, seq=seq)
        if isinstance(message, AssignWork):
            events = group_assignments(events)
        for event in events:
            evolve(state, event)
            log.append(encode(event))

    pipelines = [
        PipelineSpec(pipeline_name=name, pipeline_type="sim", model_config={"model": name})
        for name in ("good", "bad", "flaky")
    ]
    step(
        CreateExperiment(
            experiment_id="exp-golden",
            context_id="ctx-golden",
            experiment_name="golden",
            dataset_ref="sha256-0f00",
            row_count=6,
            num_shards=2,
            pipelines=pipelines,
            max_attempts=2,
            issued_at=1.0,
        ),
        1.5,
        "cmd",
    )
    executors = (ExecutorSlot(executor_id="ex-1", backends=frozenset({"sim"}), free_slots=3),)
    step(AssignWork(executors=executors), 2.0)
    stats = ShardStats(rows=3, metrics={"exact_match": MetricStats(3, 2.0, 2.0, 0.0, 1.0)})
    step(
        ShardFinished(executor_id="ex-1", pipeline_id=1, shard=0, attempt=1, stats=stats),
        3.0,
        "rpt",
    )
    step(
        ShardErrored(
            executor_id="ex-1",
            pipeline_id=2,
            shard=0,
            attempt=1,
            error="bad weights",
            retryable=False,
        ),
        3.5,
        "rpt",
    )
    step(
        StopPipeline(pipeline_id=1, issued_at=4.0, actor="ana@lab", reason="diverging"), 4.1, "cmd"
    )
    step(ResumePipeline(pipeline_id=2, issued_at=4.2), 4.3, "cmd")
    step(ResumePipeline(pipeline_id=1, issued_at=4.4), 4.5, "cmd")
    step(
        ClonePipeline(pipeline_id=1, changes=PipelineChanges(sampling_params={"t": 0.5})),
        5.0,
        "cmd",
    )
    step(AssignWork(executors=executors), 5.5)
    step(ExpireExecutor(executor_id="ex-1"), 6.0)
    step(AssignWork(executors=executors), 6.5)
    log.append(FROM_THE_FUTURE)
    step(DeletePipeline(pipeline_id=3, issued_at=7.0), 7.1, "cmd")
    step(
        CloneIntoContext(
            context_id="ctx-golden",
            spec=PipelineSpec(pipeline_name="extra", pipeline_type="sim"),
            issued_at=7.5,
        ),
        7.6,
        "cmd",
    )
    step(AssignWork(executors=executors), 8.0)
    for pid in (1, 4, 5, 1, 4, 5):
        for shard in (0, 1):
            pipeline = state.pipelines[pid]
            if shard in pipeline.in_flight:
                a = pipeline.in_flight[shard]
                done = ShardFinished(
                    executor_id=a.executor_id,
                    pipeline_id=pid,
                    shard=shard,
                    attempt=a.attempt,
                    stats=stats,
                )
                step(done, 9.0, "rpt")
        step(AssignWork(executors=executors), 9.5 + pid)
    policy_run(step, state, executors)
    retry_run(step, state, executors, stats)
    budget_run(step, state, executors)
    repair_run(step, state, executors)
    extend_run(step, state, executors)
    batch_run(step, state)
    return commands, log


def batch_run(step, state) -> None:  # type: ignore[no-untyped-def]
    """v7: a tick gives one executor three shards of a pipeline (one `shards_assigned`), and
    one report finishes two of them (one `shards_completed`) and then the last."""
    spec = PipelineSpec(pipeline_name="batched", pipeline_type="sim", model_config={"model": "b"})
    step(
        CreateExperiment(
            experiment_id="exp-batch",
            context_id="ctx-batch",
            experiment_name="batched",
            dataset_ref="sha256-0b0b",
            row_count=6,
            num_shards=3,
            pipelines=[spec],
            issued_at=70.0,
        ),
        70.1,
        "cmd",
    )
    pid = max(state.pipelines)
    slots = (ExecutorSlot(executor_id="ex-4", backends=frozenset({"sim"}), free_slots=3),)
    step(AssignWork(executors=slots), 70.5)

    def finished(shard: int) -> ShardFinished:
        stats = ShardStats(rows=2, metrics={"exact_match": MetricStats(2, 1.0, 1.0, 0.0, 1.0)})
        return ShardFinished(
            executor_id="ex-4", pipeline_id=pid, shard=shard, attempt=1, stats=stats
        )

    step(ShardsFinished(executor_id="ex-4", reports=[finished(0), finished(1)]), 71.0, "rpt")
    step(ShardsFinished(executor_id="ex-4", reports=[finished(2)]), 71.5, "rpt")


def extend_run(step, state, executors) -> None:  # type: ignore[no-untyped-def]
    """v6: a completed experiment gets 10 more rows as 2 more shards, in their own order."""
    step(
        CreateExperiment(
            experiment_id="exp-extend",
            context_id="ctx-extend",
            experiment_name="extend",
            dataset_ref="sha256-0f00",
            row_count=10,
            num_shards=1,
            pipelines=[PipelineSpec(pipeline_name="grows", pipeline_type="sim")],
            row_order=RowOrder(seed=3),
            issued_at=60.0,
        ),
        60.5,
        "cmd",
    )
    pid = state.experiments["exp-extend"].pipeline_ids[0]

    def finish(shard: int, start: int, rows: int, segment: int, now: float) -> None:
        a = state.pipelines[pid].in_flight[shard]
        scores = {"exact_match": [1.0] * rows}
        terms = shard_terms(scores, start, 10, 0.95)
        terms.segment = segment
        stats = ShardStats(
            rows=rows,
            metrics={"exact_match": MetricStats(rows, rows, rows, 1.0, 1.0)},
            sequence=terms,
        )
        report = ShardFinished(
            executor_id=a.executor_id, pipeline_id=pid, shard=shard, attempt=a.attempt, stats=stats
        )
        step(report, now, "rpt")

    step(AssignWork(executors=executors), 61.0)
    finish(0, 0, 10, 0, 61.5)
    more = Segment(
        dataset_ref="sha256-0f01", row_count=10, num_shards=2, row_order=RowOrder(seed=4)
    )
    step(ExtendExperiment(experiment_id="exp-extend", rows=more, issued_at=62.0), 62.1, "cmd")
    step(AssignWork(executors=executors), 62.5)
    finish(1, 0, 5, 1, 63.0)
    finish(2, 5, 5, 1, 63.1)


def repair_run(step, state, executors) -> None:  # type: ignore[no-untyped-def]
    """v6: a pipeline completes with a row the engine failed on; a retry runs just that row."""
    step(
        CreateExperiment(
            experiment_id="exp-repair",
            context_id="ctx-repair",
            experiment_name="repair",
            dataset_ref="sha256-0f00",
            row_count=4,
            num_shards=2,
            pipelines=[PipelineSpec(pipeline_name="patchy", pipeline_type="sim")],
            issued_at=50.0,
        ),
        50.5,
        "cmd",
    )
    pid = state.experiments["exp-repair"].pipeline_ids[0]
    scored = {"exact_match": MetricStats(2, 2.0, 2.0, 1.0, 1.0)}

    def finish(shard: int, stats: ShardStats, now: float) -> None:
        a = state.pipelines[pid].in_flight[shard]
        report = ShardFinished(
            executor_id=a.executor_id, pipeline_id=pid, shard=shard, attempt=a.attempt, stats=stats
        )
        step(report, now, "rpt")

    step(AssignWork(executors=executors), 51.0)
    finish(0, ShardStats(rows=2, metrics=scored), 51.5)
    one = {"exact_match": MetricStats(1, 1.0, 1.0, 1.0, 1.0)}
    finish(1, ShardStats(rows=2, metrics=one, errors=1, error_rows=[3]), 51.6)
    step(RetryPipeline(pipeline_id=pid, issued_at=52.0, reason="the endpoint is back"), 52.1, "cmd")
    step(AssignWork(executors=executors), 52.5)
    finish(1, ShardStats(rows=1, metrics=one), 53.0)


def budget_run(step, state, executors) -> None:  # type: ignore[no-untyped-def]
    """v6: an experiment's token budget holds its third shard back, stops the pipeline once
    the spend alone leaves no room, and a raised budget lets it finish."""
    step(
        CreateExperiment(
            experiment_id="exp-budget",
            context_id="ctx-budget",
            experiment_name="budget",
            dataset_ref="sha256-0f00",
            row_count=4,
            num_shards=4,
            pipelines=[
                PipelineSpec(
                    pipeline_name="priced",
                    pipeline_type="sim",
                    model_config={"model": "priced", "tokens_per_row": 10},
                    client_config={"price_per_1k_completion_tokens": 1.0},
                )
            ],
            budget=Budget(tokens=30),
            prompt_tokens=8,  # 2 a row: each shard reserves 12 tokens
            issued_at=40.0,
        ),
        40.5,
        "cmd",
    )
    pid = state.experiments["exp-budget"].pipeline_ids[0]
    used = ShardStats(rows=1, prompt_tokens=2, completion_tokens=10)

    def finish_all(now: float) -> None:
        for shard, a in sorted(state.pipelines[pid].in_flight.items()):
            report = ShardFinished(
                executor_id=a.executor_id,
                pipeline_id=pid,
                shard=shard,
                attempt=a.attempt,
                stats=used,
            )
            step(report, now, "rpt")

    step(AssignWork(executors=executors), 41.0)  # two shards fit 30 tokens, a third does not
    finish_all(41.5)
    step(AssignWork(executors=executors), 42.0)  # 24 spent + 12 > 30: budget_exhausted
    step(
        SetBudget(experiment_id="exp-budget", budget=Budget(tokens=60), issued_at=43.0), 43.1, "cmd"
    )
    step(AssignWork(executors=executors), 43.5)
    finish_all(44.0)


def retry_run(step, state, executors, stats) -> None:  # type: ignore[no-untyped-def]
    """v5: the pipeline that failed ("bad") is retried and completes."""
    step(RetryPipeline(pipeline_id=2, issued_at=70.0, actor="ana@lab", reason="fixed"), 70.1, "cmd")
    for now in (30.5, 31.5):
        step(AssignWork(executors=executors), now)
        for shard, a in sorted(state.pipelines[2].in_flight.items()):
            report = ShardFinished(
                executor_id=a.executor_id,
                pipeline_id=2,
                shard=shard,
                attempt=a.attempt,
                stats=stats,
            )
            step(report, now + 0.5, "rpt")


def policy_run(step, state, executors) -> None:  # type: ignore[no-untyped-def]
    """v4: shuffled rows, confidence-sequence terms, and a pipeline its prune policy stops and
    a person resumes."""
    prune = PrunePolicy(rule="dominated", metric="exact_match", min_rows=2)
    step(
        CreateExperiment(
            experiment_id="exp-policy",
            context_id="ctx-policy",
            experiment_name="policy",
            dataset_ref="sha256-0f00",
            row_count=20,
            num_shards=2,
            pipelines=[
                PipelineSpec(pipeline_name=name, pipeline_type="sim", model_config={"model": name})
                for name in ("strong", "weak")
            ],
            row_order=RowOrder(seed=7),
            policy=Policy(prune=prune),
            issued_at=20.0,
        ),
        20.5,
        "cmd",
    )
    first = state.experiments["exp-policy"].pipeline_ids[0]

    def finish(pid: int, shard: int, score: float, now: float) -> None:
        a = state.pipelines[pid].in_flight[shard]
        scores = {"exact_match": [score] * 10}
        stats = ShardStats(
            rows=10,
            metrics={"exact_match": MetricStats(10, 10 * score, 10 * score, score, score)},
            sequence=shard_terms(scores, 10 * shard, 20, 0.95),
        )
        report = ShardFinished(
            executor_id=a.executor_id, pipeline_id=pid, shard=shard, attempt=a.attempt, stats=stats
        )
        step(report, now, "rpt")

    step(AssignWork(executors=executors), 21.0)
    finish(first, 0, 1.0, 21.5)
    finish(first, 1, 1.0, 21.6)
    finish(first + 1, 0, 0.0, 21.7)  # its upper bound falls below the strong one's lower
    step(ResumePipeline(pipeline_id=first + 1, issued_at=22.0), 22.1, "cmd")
    step(AssignWork(executors=executors), 22.5)
    finish(first + 1, 1, 0.0, 23.0)


def read_model(commands: list[bytes], events: list[bytes]) -> ReadModel:
    model = ReadModel()
    for ic_id, line in enumerate(commands, 1):
        apply_command(model, ic_id, decode_command(line))
    for seq, line in enumerate(events, 1):
        apply_event(model, seq, decode_event(line))
    return model


if __name__ == "__main__":
    version = sys.argv[1]
    files = {k: HERE / f"{k}-{version}.{x}" for k, x in FILES.items()}
    if any(f.exists() for f in files.values()):
        sys.exit(f"{version} exists: golden files are never rewritten, pick a new version")
    commands, log = scenario()
    files["commands"].write_bytes(b"\n".join(commands) + b"\n")
    files["events"].write_bytes(b"\n".join(log) + b"\n")
    files["state"].write_bytes(snapshot(fold(decode_event(line) for line in log)) + b"\n")
    files["readmodel"].write_bytes(encoded(read_model(commands, log)) + b"\n")
    print(f"wrote {len(commands)} commands, {len(log)} events and what they fold to ({version})")
