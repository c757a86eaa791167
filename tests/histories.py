"""Random histories: arbitrary sequences of commands, reports and ticks, driven through `decide`
and `evolve` as the scheduler does, for the property tests of the decider and the read models."""

from __future__ import annotations

from collections import defaultdict
from typing import NamedTuple

from hypothesis import strategies as st

from inferno.events import State, decide, evolve, snapshot
from inferno.events.commands import (
    AnyCommand,
    AssignWork,
    CloneIntoContext,
    ClonePipeline,
    CreateExperiment,
    DeletePipeline,
    ExecutorSlot,
    ExpireExecutor,
    ResumePipeline,
    ShardAborted,
    ShardErrored,
    ShardFinished,
    ShardProgress,
    StopPipeline,
)
from inferno.events.events import (
    Event,
)
from inferno.events.model import MetricStats, PipelineChanges, PipelineSpec, ShardStats
from inferno.readmodels import ReadModel, apply_command, apply_event

EXECUTORS = ("ex-a", "ex-b", "ex-c")

action = st.one_of(
    st.tuples(st.just("create"), st.integers(1, 3), st.integers(1, 4), st.integers(0, 6)),
    st.tuples(st.sampled_from(["stop", "resume", "delete", "clone"]), st.integers(0, 9)),
    st.tuples(st.just("clone_ctx"), st.integers(0, 3)),
    st.tuples(st.just("assign"), st.integers(1, 4), st.integers(0, 2)),
    st.tuples(st.just("expire"), st.integers(0, 2)),
)
report = st.tuples(
    st.sampled_from(["finish"] * 6 + ["error", "fatal", "abort", "progress", "stale"]),
    st.integers(0, 20),
)
# Reports only matter once work is assigned, so they are drawn as often as everything else.
step = st.one_of(action, report, report)
# Every run starts with a valid experiment and an assignment round, then anything may happen.
runs = st.lists(step, max_size=80).map(
    lambda steps: [("create", 2, 3, 3), ("assign", 1, 0), *steps]
)


def to_message(act: tuple, state: State, step: int):
    """Interpret a drawn action against the current state, so reports hit live assignments."""
    kind = act[0]
    if kind == "create":
        _, n_pipelines, n_shards, extra_rows = act
        return CreateExperiment(
            experiment_id=f"exp-{step % 4}",
            context_id=f"ctx-{step % 4}",
            experiment_name="e",
            dataset_ref="sha256-0",
            row_count=n_shards + extra_rows - 1,
            num_shards=n_shards,
            pipelines=[
                PipelineSpec(
                    pipeline_name=f"p{i}",
                    pipeline_type="sim",
                    model_config={"model": f"m{i % 2}"},
                )
                for i in range(n_pipelines)
            ],
            max_attempts=2,
            issued_at=float(step),
        )
    if kind in ("stop", "resume", "delete", "clone"):
        cls = {
            "stop": StopPipeline,
            "resume": ResumePipeline,
            "delete": DeletePipeline,
            "clone": ClonePipeline,
        }[kind]
        extra = {"changes": PipelineChanges(sampling_params={"t": step})} if kind == "clone" else {}
        return cls(pipeline_id=act[1], issued_at=float(step), **extra)
    if kind == "clone_ctx":
        return CloneIntoContext(
            context_id=f"ctx-{act[1]}",
            spec=PipelineSpec(pipeline_name="c", pipeline_type="sim"),
        )
    if kind == "assign":
        _, slots, loaded = act
        return AssignWork(
            executors=tuple(
                ExecutorSlot(
                    executor_id=e,
                    backends=frozenset({"sim"}),
                    free_slots=slots,
                    loaded_models=frozenset({f"sim:m{loaded % 2}"}),
                    # 2: a queue's pass, for the loaded model only (work.queue_capacity)
                    only_models=frozenset({"sim:m0"}) if loaded == 2 else None,
                )
                for e in EXECUTORS
            )
        )
    if kind == "expire":
        return ExpireExecutor(executor_id=EXECUTORS[act[1]])
    live = [
        (p.pipeline_id, shard, a)
        for p in state.pipelines.values()
        for shard, a in sorted(p.in_flight.items())
    ]
    if not live:
        return None
    pid, shard, assignment = live[act[1] % len(live)]
    common = {
        "executor_id": assignment.executor_id,
        "pipeline_id": pid,
        "shard": shard,
        "attempt": assignment.attempt,
    }
    if kind == "finish":
        stats = ShardStats(rows=2, metrics={"exact_match": MetricStats(2, 1.0, 1.0, 0.0, 1.0)})
        return ShardFinished(stats=stats, **common)
    if kind == "stale":
        return ShardFinished(**{**common, "attempt": assignment.attempt + 1})
    if kind == "error":
        return ShardErrored(error="boom", **common)
    if kind == "fatal":
        return ShardErrored(error="bad model", retryable=False, **common)
    if kind == "abort":
        return ShardAborted(**common)
    return ShardProgress(rows_done=1, **common)


class Run(NamedTuple):
    state: State
    log: list[Event]
    decisions: list[tuple[object, list[Event]]]  # (input, the events decided for it)
    statuses: dict[int, list[str]]  # every status an operation showed, as the api would see it
    commands: dict[int, AnyCommand]  # INFERNO_CMD: ic_id -> command
    model: ReadModel  # the api's read model, folded as the scheduler wrote


def run(actions: list[tuple]) -> Run:
    """Drive decide/evolve like the scheduler does, checking that decide never mutates state.
    A read model plays the api's projection: commands show as pending until decided."""
    state, log, decisions = State(), [], []
    projection = ReadModel()
    commands: dict[int, AnyCommand] = {}
    statuses: dict[int, list[str]] = defaultdict(list)
    cmd_seq = report_seq = 0
    for step, act in enumerate(actions):
        message = to_message(act, state, step)
        if message is None:
            continue
        if isinstance(message, AssignWork | ExpireExecutor):
            seq = 0
        elif isinstance(message, ShardFinished | ShardErrored | ShardAborted | ShardProgress):
            report_seq += 1
            seq = report_seq
        else:
            cmd_seq += 1
            seq = cmd_seq
            commands[seq] = message
            apply_command(projection, seq, message)
            statuses[seq].append(projection.operations[seq].status)
        before = snapshot(state)
        events = decide(state, message, now=float(step), seq=seq)
        assert snapshot(state) == before, "decide mutated the state"
        for event in events:
            evolve(state, event)
            apply_event(projection, len(log) + 1, event)
            log.append(event)
        decisions.append((message, events))
        for ic_id, op in projection.operations.items():
            if not statuses[ic_id] or statuses[ic_id][-1] != op.status:
                statuses[ic_id].append(op.status)
    return Run(state, log, decisions, statuses, commands, projection)
