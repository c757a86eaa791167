"""Prune policies: the rules alone, and as decisions in the log (stop, reason, resume)."""

from __future__ import annotations

from inferno.events import State, decide, evolve
from inferno.events.commands import AssignWork, CreateExperiment, ExecutorSlot, ResumePipeline
from inferno.events.commands import ShardFinished as Finished
from inferno.events.events import PipelinePruned
from inferno.events.model import (
    EvalSpec,
    MetricStats,
    PipelineSpec,
    Policy,
    PrunePolicy,
    RowOrder,
    Scorer,
    ShardStats,
)
from inferno.events.policy import Standing, to_prune
from inferno.events.sequences import shard_terms

DOMINATED = PrunePolicy(rule="dominated", metric="m", min_rows=10)
MEDIAN = PrunePolicy(rule="median_of_peers", metric="m", min_rows=10)


def standing(pid: int, value: float, lower: float, upper: float, **changes: object) -> Standing:
    base = Standing(pid, True, False, 50, value, lower, upper, "5/10")
    return base._replace(**changes)


def test_dominated_stops_only_pipelines_whose_upper_is_below_the_best_lower():
    standings = [
        standing(1, 0.9, 0.80, 0.97),
        standing(2, 0.7, 0.55, 0.79),  # below 0.80
        standing(3, 0.8, 0.62, 0.90),  # overlaps the best: kept
        standing(4, 0.2, 0.05, 0.40, exempt=True),  # a person resumed it
        standing(5, 0.1, 0.00, 0.30, rows=9),  # too few rows yet
        standing(6, 0.3, 0.10, 0.50, running=False),  # stopped already
    ]
    assert to_prune(DOMINATED, standings) == [
        (2, "m upper 0.790 < best lower 0.800 (pipeline 1) at 5/10 shards, 50 rows")
    ]
    # a completed pipeline can be the best another is measured against
    finished = [standing(1, 0.9, 0.9, 0.9, running=False), standing(2, 0.5, 0.3, 0.7)]
    assert [pid for pid, _ in to_prune(DOMINATED, finished)] == [2]
    assert to_prune(DOMINATED, [standing(1, 0.9, 0.8, 0.97)]) == []  # nobody to compare with


def test_median_of_peers_stops_whatever_is_below_its_running_peers_median():
    standings = [standing(i, v, 0.0, 1.0) for i, v in enumerate((0.5, 0.6, 0.7, 0.8), 1)]
    pruned = to_prune(MEDIAN, standings)
    assert [pid for pid, _ in pruned] == [1, 2]
    assert pruned[0][1] == "m 0.500 < peers' median 0.700 (3 peers) at 5/10 shards, 50 rows"


# as decisions

ROWS, SHARD_ROWS = 40, 20


def _run(policy: Policy) -> tuple[State, list[object]]:
    """Two pipelines, the weak one's first shard scores 0, the strong one's shards score 1."""
    state, log = State(), []

    def step(message: object, seq: int = 0) -> None:
        for event in decide(state, message, now=1.0, seq=seq):  # type: ignore[arg-type]
            evolve(state, event)
            log.append(event)

    step(
        CreateExperiment(
            experiment_id="e",
            context_id="c",
            experiment_name="x",
            dataset_ref="sha256-00",
            row_count=ROWS,
            num_shards=2,
            eval=EvalSpec(scorers=[Scorer(name="exact_match", target="a")]),
            pipelines=[PipelineSpec(pipeline_name=n, pipeline_type="sim") for n in "sw"],
            row_order=RowOrder(seed=1),
            policy=policy,
        ),
        1,
    )
    slot = ExecutorSlot(executor_id="x", backends=frozenset({"sim"}), free_slots=4)
    step(AssignWork(executors=(slot,)))
    for seq, (pid, shard, score) in enumerate([(1, 0, 1.0), (1, 1, 1.0), (2, 0, 0.0)], 1):
        scores = {"exact_match": [score] * SHARD_ROWS}
        stats = ShardStats(
            rows=SHARD_ROWS,
            metrics={"exact_match": MetricStats(SHARD_ROWS, SHARD_ROWS * score, 0, score, score)},
            sequence=shard_terms(scores, shard * SHARD_ROWS, ROWS, 0.95),
        )
        attempt = state.pipelines[pid].in_flight[shard].attempt
        step(
            Finished(executor_id="x", pipeline_id=pid, shard=shard, attempt=attempt, stats=stats),
            seq,
        )
    return state, log


def test_the_policy_stops_the_dominated_pipeline_with_its_reason_and_a_resume_undoes_it():
    prune = PrunePolicy(rule="dominated", metric="exact_match", min_rows=10)
    state, log = _run(Policy(prune=prune))
    [pruned] = [e for e in log if isinstance(e, PipelinePruned)]
    assert (pruned.pipeline_id, pruned.rule) == (2, "dominated")
    assert pruned.reason.startswith("exact_match upper 0.")
    assert pruned.reason.endswith("< best lower 1.000 (pipeline 1) at 1/2 shards, 20 rows")
    assert state.pipelines[2].status == "stopped"
    assert state.pipelines[2].in_flight  # its running shard runs on and counts, as after a stop
    for event in decide(state, ResumePipeline(pipeline_id=2), now=2.0, seq=2):
        evolve(state, event)
    assert (state.pipelines[2].status, state.pipelines[2].exempt) == ("ongoing", True)


def test_without_a_policy_nothing_is_pruned_and_nothing_is_kept_for_it():
    state, log = _run(Policy())
    assert not [e for e in log if isinstance(e, PipelinePruned)]
    assert state.pipelines[2].sequence is None  # the decider keeps only what it decides on
