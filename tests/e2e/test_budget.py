"""Budgets on a real cluster: an experiment's dollar budget stops its pipeline at exactly the
shard whose reservation would pass it, the stop is in the log with its numbers and in `inferno
ops`, `inferno budget` raises it and the pipeline finishes, every shard once.

The prompts are 4 characters, so the api's estimate (characters / 4) is exactly what the sim
engine reports: each 2-row shard reserves and uses 2 prompt + 12 completion tokens, $0.026 at
$1 / $2 per 1,000 tokens. A budget of $0.08 fits three shards ($0.078), not a fourth."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest

from inferno.events.events import BudgetExhausted, BudgetSet, ShardCompleted

if TYPE_CHECKING:
    from conftest import Live

ROWS = [{"question": f"{i:02d}+1", "answer": str(i + 1)} for i in range(24)]
SHARDS, SHARD_USD = 12, 0.026
PRICES = {"price_per_1k_prompt_tokens": 1.0, "price_per_1k_completion_tokens": 2.0}


def body(live: Live, **extra: Any) -> dict[str, Any]:
    pipeline = live.sim("capped", latency_ms=20, accuracy=0.5)
    pipeline["client_config"] = PRICES
    return {
        "experiment_name": "budgeted",
        "num_shards": SHARDS,
        "dataset": {"rows": ROWS},
        "eval": {"prompt": "{question}", "scorers": [{"name": "exact_match", "target": "answer"}]},
        "pipelines": [pipeline],
        **extra,
    }


async def test_a_budget_stops_the_run_and_a_raised_one_finishes_it(shared_live: Live) -> None:
    live = shared_live
    created = await live.create_experiment(body(live, budget={"usd": 0.08}))
    experiment_id, pid = created["experiment_id"], created["pipelines"][0]["pipeline_id"]

    [stopped] = await live.settled(pid, timeout=120)
    assert (stopped["status"], stopped["shards_completed"]) == ("stopped", 3), stopped
    assert stopped["over_budget"].startswith("experiment budget: $0.0780 of $0.08 used"), stopped
    assert stopped["estimated_cost"] == pytest.approx(3 * SHARD_USD)
    detail = await live.get(f"/api/v1/experiments/{experiment_id}")
    assert detail["budget"] == {"usd": 0.08}
    assert detail["spent"] == {"tokens": 3 * 14, "usd": pytest.approx(3 * SHARD_USD)}

    code, ops = await live.cli("ops", "--limit", "0")
    assert code == 0, ops
    [line] = [line for line in ops.splitlines() if "budget stop" in line]
    assert line.split()[:3] == ["-", "budget", "stop"], ops
    assert re.search(r"\bbudget +experiment budget: \$0\.0780", line), ops  # ACTOR, REASON

    code, out = await live.cli(
        "budget", experiment_id, "--usd", "1", "--wait", "60", "--reason", "worth it"
    )
    assert code == 0, out
    assert out.startswith(f"budget of experiment {experiment_id}: ic_id"), out
    [done] = await live.settled(pid, timeout=120)
    assert (done["status"], done["shards_completed"], done["over_budget"]) == (
        "completed",
        SHARDS,
        None,
    ), done
    assert done["estimated_cost"] == pytest.approx(SHARDS * SHARD_USD)

    log = [e for _, e in await live.events()]
    completions = [e.shard for e in log if isinstance(e, ShardCompleted) and e.pipeline_id == pid]
    assert sorted(completions) == list(range(SHARDS))  # nothing before the stop ran again
    [exhausted] = [e for e in log if isinstance(e, BudgetExhausted) and e.pipeline_id == pid]
    assert "next shard may cost $0.0260" in exhausted.reason, exhausted
    [raised] = [e for e in log if isinstance(e, BudgetSet) and e.experiment_id == experiment_id]
    assert raised.budget.usd == 1.0
    history = await live.get("/api/v1/events", pipeline_id=pid, type="set_budget,budget_set")
    assert [(e["type"], e["reason"]) for e in history["entries"]] == [
        ("set_budget", "worth it"),
        ("budget_set", "worth it"),
    ]


async def test_a_dollar_budget_needs_prices(shared_live: Live) -> None:
    live = shared_live
    unpriced = body(live, budget={"usd": 1})
    unpriced["pipelines"][0]["client_config"] = {}
    response = await live.http.post("/api/v1/experiments", json=unpriced)
    assert response.status_code == 400, response.text
    assert "budget.usd" in response.text, response.text
    assert "has no prices" in response.text, response.text

    too_small = body(live)
    too_small["pipelines"][0]["budget"] = {"tokens": 10}  # one shard may take 14
    created = await live.create_experiment(too_small)
    pid = created["pipelines"][0]["pipeline_id"]
    [stopped] = await live.settled(pid, timeout=120)
    assert (stopped["status"], stopped["shards_completed"]) == ("stopped", 0), stopped
    assert stopped["over_budget"] == (
        "pipeline budget: 0 of 10 tokens used, and the next shard may take 14"
    )
    code, out = await live.cli("budget", str(pid), "--pipeline", "--tokens", "1000", "--wait", "60")
    assert code == 0, out
    [done] = await live.settled(pid, timeout=120)
    assert (done["status"], done["budget"]) == ("completed", {"tokens": 1000}), done
