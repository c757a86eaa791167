"""Budgets: shards are reserved at their worst case before they are assigned and settled to what
they used; a pipeline stops once the spend alone leaves no room for its next shard, and a
raised budget lets it run again."""

from __future__ import annotations

import pytest

from inferno.client.tables import automatic_stop, in_order
from inferno.events import State
from inferno.events.budgets import Spend, completion_bound, reservation, spent
from inferno.events.commands import (
    AssignWork,
    ClonePipeline,
    CreateExperiment,
    DeletePipeline,
    ExecutorSlot,
    ResumePipeline,
    SetBudget,
    ShardFinished,
)
from inferno.events.events import BudgetExhausted, BudgetSet, OperationFailed, ShardAssigned
from inferno.events.model import Budget, PipelineChanges, PipelineSpec, ShardStats
from inferno.events.preconditions import refusal
from tests.deciding import Decided

PRICES = {"price_per_1k_prompt_tokens": 1.0, "price_per_1k_completion_tokens": 2.0}
# 8 rows in 4 shards; 16 prompt tokens in all (2 a row); 6 completion tokens a row:
# each shard reserves 4 + 12 = 16 tokens, $0.028
SHARD = Spend(16, 0.028)


def sim(name: str, **parts: object) -> PipelineSpec:
    return PipelineSpec(
        pipeline_name=name,
        pipeline_type="sim",
        model_config={"model": name, "tokens_per_row": 6},
        client_config=PRICES,
        **parts,  # type: ignore[arg-type]
    )


class Run(Decided):
    def __init__(self, *pipelines: PipelineSpec, budget: Budget | None = None) -> None:
        super().__init__()
        self(
            CreateExperiment(
                experiment_id="e",
                context_id="c",
                experiment_name="x",
                dataset_ref="sha256-00",
                row_count=8,
                num_shards=4,
                pipelines=list(pipelines),
                budget=budget,
                prompt_tokens=16,
            )
        )

    def assign(self, slots: int = 8) -> list[ShardAssigned]:
        slot = ExecutorSlot(executor_id="x", backends=frozenset({"sim"}), free_slots=slots)
        return [e for e in self(AssignWork(executors=(slot,))) if isinstance(e, ShardAssigned)]

    def finish(self, assigned: ShardAssigned, prompt: int = 4, completion: int = 12) -> None:
        stats = ShardStats(rows=2, prompt_tokens=prompt, completion_tokens=completion)
        self(
            ShardFinished(
                executor_id="x",
                pipeline_id=assigned.pipeline_id,
                shard=assigned.shard,
                attempt=assigned.attempt,
                stats=stats,
            )
        )

    def stops(self) -> list[BudgetExhausted]:
        """Every budget stop so far, after one more tick (with no free slot)."""
        self(AssignWork(executors=()))
        return [e for e in self.log if isinstance(e, BudgetExhausted)]


def test_a_shard_reserves_its_rows_share_of_prompts_and_every_completion_at_its_bound():
    assert reservation(sim("a"), 8, 4, 16, 0) == SHARD
    assert reservation(sim("a"), 9, 4, 18, 0) == Spend(3 * 2 + 3 * 6, pytest.approx(0.042))
    assert completion_bound(sim("a", sampling_params={"max_tokens": 2})) == 2
    unpriced = PipelineSpec(pipeline_name="u", pipeline_type="sim")
    assert reservation(unpriced, 8, 4, 16, 0).usd == 0.0
    assert spent(sim("a"), 10, 5) == Spend(15, 0.02)


def test_shards_in_flight_hold_the_budget_and_a_settled_one_gives_back_its_unused_part():
    run = Run(sim("a"), budget=Budget(usd=0.07))
    first = run.assign()
    assert [a.shard for a in first] == [0, 1]  # two reservations fit $0.07, a third does not
    assert run.stops() == []  # nothing spent: settling may make room
    run.finish(first[0], completion=2)  # used $0.008 of its $0.028
    [third] = run.assign()
    assert third.shard == 2  # $0.008 spent + $0.028 held + $0.028 fits
    run.finish(first[1])
    run.finish(third)
    assert run.assign() == []  # $0.064 spent: the last shard's $0.028 does not fit
    [stop] = run.stops()  # decided with the tick that could not place it
    assert stop.reason == (
        "experiment budget: $0.0640 of $0.07 used, and the next shard may cost $0.0280"
    )
    assert run.state.pipelines[1].status == "stopped"
    assert run.stops() == [stop]  # once


def test_an_experiment_budget_is_shared_and_a_pipeline_budget_is_its_own():
    run = Run(sim("a", budget=Budget(tokens=16)), sim("b"), budget=Budget(tokens=64))
    assigned = run.assign()
    assert sorted((a.pipeline_id, a.shard) for a in assigned) == [(1, 0), (2, 0), (2, 1), (2, 2)]
    for a in assigned:
        run.finish(a)
    own, shared = run.stops()  # a: 16 of its 16 (its own budget says first); b: 64 of 64
    assert (own.pipeline_id, own.reason) == (
        1,
        "pipeline budget: 16 of 16 tokens used, and the next shard may take 16",
    )
    assert shared.pipeline_id == 2
    assert shared.reason.startswith("experiment budget: 64 of 64 tokens used")


def test_a_raised_budget_resumes_what_it_stopped_and_keeps_what_it_does_not_set():
    run = Run(sim("a"), budget=Budget(usd=0.03, tokens=1000))
    [first] = run.assign()
    run.finish(first)
    assert [s.pipeline_id for s in run.stops()] == [1]
    [raised] = run(SetBudget(experiment_id="e", budget=Budget(usd=1.0)))
    assert isinstance(raised, BudgetSet)
    assert raised.budget == Budget(usd=1.0, tokens=1000)
    assert run.state.pipelines[1].status == "ongoing"
    assert len(run.assign()) == 3
    [own] = run(SetBudget(experiment_id="e", pipeline_id=1, budget=Budget(tokens=5)))
    assert run.state.pipelines[1].spec.budget == Budget(tokens=5)
    assert isinstance(own, BudgetSet)


def test_resume_undoes_a_budget_stop_and_the_budget_stops_it_again():
    run = Run(sim("a"), budget=Budget(tokens=16))
    run.finish(run.assign()[0])
    run.stops()
    run(ResumePipeline(pipeline_id=1))
    assert run.state.pipelines[1].status == "ongoing"
    _, again = run.stops()
    assert again.reason.startswith("experiment budget: 16 of 16 tokens used")


def test_a_deleted_pipelines_spend_still_counts_against_the_experiment():
    run = Run(sim("a"), sim("b"), budget=Budget(tokens=48))
    assigned = run.assign(slots=2)
    for a in assigned:
        run.finish(a)
    run(DeletePipeline(pipeline_id=1))
    assert [a.shard for a in run.assign()] == [1]  # 32 spent: one more 16-token shard of b
    assert run.state.experiments["e"].budget == Budget(tokens=48)


def test_dollar_budgets_need_prices_wherever_they_apply():
    unpriced = PipelineSpec(pipeline_name="u", pipeline_type="sim")
    create = CreateExperiment(
        experiment_id="e",
        context_id="c",
        experiment_name="x",
        dataset_ref="sha256-00",
        row_count=8,
        num_shards=4,
        pipelines=[unpriced],
        budget=Budget(usd=1),
    )
    refused = refusal(State(), create)
    assert refused is not None
    assert "a budget in usd needs prices: pipeline 'u'" in refused.reason
    run = Run(sim("a"), budget=Budget(usd=1))
    clone = ClonePipeline(pipeline_id=1, changes=PipelineChanges(client_config={
        "price_per_1k_prompt_tokens": None, "price_per_1k_completion_tokens": None
    }))  # fmt: skip
    [failed] = run(clone)
    assert isinstance(failed, OperationFailed)
    assert "needs prices" in failed.error
    missing = refusal(run.state, SetBudget(experiment_id="nope", budget=Budget(tokens=1)))
    assert missing is not None
    assert missing.missing == "experiment nope"
    elsewhere = refusal(
        run.state, SetBudget(experiment_id="e", pipeline_id=9, budget=Budget(tokens=1))
    )
    assert elsewhere is not None
    assert elsewhere.missing == "pipeline 9"
    empty = refusal(run.state, SetBudget(experiment_id="e", budget=Budget()))
    assert empty is not None
    assert empty.reason == "a budget needs usd, tokens or both"


def test_ops_places_automatic_stops_between_the_operations_by_time():
    ops = [
        {"ic_id": 2, "operation": "stop", "created_at": 30.0},
        {"ic_id": 1, "operation": "create_experiment", "created_at": 10.0},
    ]
    entry = {
        "type": "budget_exhausted",
        "payload": {"pipeline_id": 4, "reason": "experiment budget: ...", "at": 20.0},
    }
    stop = automatic_stop(entry)
    assert (stop["operation"], stop["actor"], stop["ic_id"]) == ("budget stop", "budget", None)
    assert [o["ic_id"] for o in in_order(ops, [stop])] == [1, None, 2]
