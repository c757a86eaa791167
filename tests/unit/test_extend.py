"""Extend: rows added to an experiment run as new shards of every pipeline, after the ones it
has; completed work stands; the confidence sequence over all rows combines each set's."""

from __future__ import annotations

import random

from inferno.events.commands import (
    AssignWork,
    ClonePipeline,
    CreateExperiment,
    ExecutorSlot,
    ExtendExperiment,
    ShardFinished,
)
from inferno.events.events import ExperimentExtended, ShardAssigned, ShardCompleted
from inferno.events.model import (
    PipelineSpec,
    Policy,
    PrunePolicy,
    RowOrder,
    Segment,
    ShardStats,
    shard_bounds,
    total_rows,
)
from inferno.events.preconditions import refusal
from inferno.events.sequences import Prefix, Strata, over_segments, shard_terms
from inferno.events.work import work_order
from inferno.readmodels import ReadModel, apply_event
from tests.deciding import Decided

SLOT = ExecutorSlot(executor_id="x", backends=frozenset({"sim"}), free_slots=8)
MORE = Segment(dataset_ref="sha256-more", row_count=6, num_shards=3, row_order=RowOrder(seed=9))


class Run(Decided):
    def __init__(self, **extra: object) -> None:
        super().__init__()
        self(
            CreateExperiment(
                experiment_id="e",
                context_id="c",
                experiment_name="x",
                dataset_ref="sha256-own",
                row_count=4,
                num_shards=2,
                pipelines=[PipelineSpec(pipeline_name="p", pipeline_type="sim")],
                row_order=RowOrder(seed=1),
                **extra,  # type: ignore[arg-type]
            )
        )

    def run_all(self) -> list[int]:
        """Assign and finish every shard there is to run; the shards, in order."""
        done = []
        while assigned := [
            e for e in self(AssignWork(executors=(SLOT,))) if isinstance(e, ShardAssigned)
        ]:
            for a in assigned:
                stats = ShardStats(rows=2)
                self(
                    ShardFinished(
                        executor_id="x",
                        pipeline_id=1,
                        shard=a.shard,
                        attempt=a.attempt,
                        stats=stats,
                    )
                )
                done.append(a.shard)
        return done


def test_added_rows_run_as_new_shards_after_the_completed_ones():
    run = Run()
    assert run.run_all() == [0, 1]
    assert run.state.pipelines[1].status == "completed"
    [extended] = run(ExtendExperiment(experiment_id="e", rows=MORE, reason="more data"))
    assert isinstance(extended, ExperimentExtended)
    assert (extended.rows.first_row, extended.rows.first_shard) == (4, 2)
    pipeline, experiment = run.state.pipelines[1], run.state.experiments["e"]
    assert (pipeline.status, pipeline.num_shards, experiment.status) == ("ongoing", 5, "running")
    assert total_rows(experiment) == 10

    assert [
        e.shard for e in run(AssignWork(executors=(SLOT,))) if isinstance(e, ShardAssigned)
    ] == [2, 3, 4]
    order = work_order(experiment, pipeline, 3)
    assert (order.dataset_ref, order.row_offset, order.row_count, order.segment) == (
        "sha256-more",
        4,
        6,
        1,
    )
    assert (order.row_start, order.row_end) == shard_bounds(6, 3, 1)
    assert order.row_order == RowOrder(seed=9)
    for shard in (2, 3, 4):
        run(
            ShardFinished(
                executor_id="x", pipeline_id=1, shard=shard, attempt=1, stats=ShardStats(rows=2)
            )
        )
    completed = sorted(e.shard for e in run.log if isinstance(e, ShardCompleted))
    assert completed == [0, 1, 2, 3, 4]  # each once: nothing done before ran again
    assert (pipeline.status, experiment.status) == ("completed", "completed")

    run(ClonePipeline(pipeline_id=1))
    assert run.state.pipelines[2].num_shards == 5  # a clone runs every row, old and new
    again = run(ExtendExperiment(experiment_id="e", rows=MORE))
    assert [(e.rows.first_row, e.rows.first_shard) for e in again] == [(10, 5)]  # type: ignore[attr-defined]

    model = ReadModel()
    for seq, event in enumerate(run.log, 1):
        apply_event(model, seq, event)  # type: ignore[arg-type]
    assert model.pipelines[1].num_shards == 8
    assert [s.first_shard for s in model.experiments["e"].segments] == [2, 5]


def test_what_cannot_be_extended_says_why():
    run = Run(policy=Policy(prune=PrunePolicy(rule="dominated", metric="exact_match")))
    refused = refusal(run.state, ExtendExperiment(experiment_id="e", rows=MORE))
    assert refused is not None
    assert "has a prune policy" in refused.reason
    plain = Run()
    too_many = Segment(dataset_ref="sha256-more", row_count=2, num_shards=3)
    refused = refusal(plain.state, ExtendExperiment(experiment_id="e", rows=too_many))
    assert refused is not None
    assert refused.reason == "num_shards must be between 1 and the 2 rows added, not 3"
    missing = refusal(plain.state, ExtendExperiment(experiment_id="nope", rows=MORE))
    assert missing is not None
    assert missing.missing == "experiment nope"


def _strata_held(own: list[float], added: list[float], rng: random.Random) -> bool:
    """The union bounds cover the mean of all rows after every shard of both sets (the own
    rows first, then the added ones, each in its own random order, 10 shards each)."""
    own, added = rng.sample(own, len(own)), rng.sample(added, len(added))
    final = (sum(own) + sum(added)) / (len(own) + len(added))
    sets: list[Prefix | None] = [Prefix(), None]
    held = True
    for index, rows in enumerate((own, added)):
        for shard in range(10):
            start, end = shard_bounds(len(rows), 10, shard)
            terms = shard_terms({"m": list(rows[start:end])}, start, len(rows), 0.95)
            terms.segment = index
            prefix = sets[index] = sets[index] or Prefix()
            prefix.absorb(terms)
            view = over_segments(sets[0], {1: sets[1]} if sets[1] else {}, [len(own), len(added)])
            assert isinstance(view, Strata)
            bounds = view.bounds("m", 0.95, len(own) + len(added))
            assert bounds is not None
            held &= bounds[0] <= final <= bounds[1]
    return held


def test_the_sequence_over_all_rows_covers_their_mean_at_every_look():
    rng = random.Random(11)
    own = [1.0] * 240 + [0.0] * 160  # 0.6 over the experiment's own rows
    added = [1.0] * 60 + [0.0] * 240  # 0.2 over the rows added later
    runs = 300
    covered = sum(_strata_held(own, added, rng) for _ in range(runs)) / runs
    print(f"\nevery look covered in {covered:.1%} of {runs} runs")
    assert covered >= 0.95
    assert over_segments(Prefix(), {}, [4]) == Prefix()  # one set: its own sequence as it is
