"""An experiment's prune policy on a real cluster: the scheduler stops the dominated pipeline as a
decision in the log, with the rule's reason, visible in the api and the history; a person's
resume undoes it, and the policy leaves that pipeline alone to the end."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import Live

ROWS, SHARDS = 400, 20
DATASET = [{"question": f"{i} + 1?", "answer": str(i + 1)} for i in range(ROWS)]


async def test_the_dominated_pipeline_is_pruned_with_its_reason_and_resume_undoes_it(
    shared_live: Live,
) -> None:
    live = shared_live
    body = {
        "experiment_name": "pruned",
        "num_shards": SHARDS,
        "dataset": {"rows": DATASET},
        "eval": {"prompt": "{question}", "scorers": [{"name": "exact_match", "target": "answer"}]},
        "pipelines": [
            live.sim("strong", latency_ms=2, accuracy=0.95),
            live.sim("weak", latency_ms=20, accuracy=0.2),  # 0.4 s a shard: pruned long before
        ],
        "policy": {"prune": {"rule": "dominated", "metric": "exact_match", "min_rows": 40}},
    }
    created = await live.create_experiment(body)
    strong, weak = (p["pipeline_id"] for p in created["pipelines"])

    async def pruned() -> dict | None:
        pipeline = await live.pipeline(weak)
        return pipeline if pipeline["pruned"] else None

    stopped = await live.until(pruned, "the policy to prune the weak pipeline", 120)
    assert stopped["status"] == "stopped"
    assert stopped["shards_completed"] < SHARDS
    reason = stopped["pruned"]
    assert reason.startswith("exact_match upper 0.")
    assert "< best lower 0." in reason, reason
    assert f"(pipeline {strong})" in reason, reason
    experiment = await live.get(f"/api/v1/experiments/{created['experiment_id']}")
    assert experiment["policy"] == {
        "prune": {"rule": "dominated", "metric": "exact_match", "min_rows": 40}
    }

    history = await live.get("/api/v1/events", pipeline_id=weak, type="pipeline_pruned")
    [entry] = history["entries"]
    assert entry["payload"]["reason"] == reason
    assert entry["payload"]["rule"] == "dominated"

    resumed = await live.post(f"/api/v1/pipelines/{weak}/resume", params={"wait": 30})
    assert resumed["status"] == "completed", resumed
    final = await live.settled(strong, weak, timeout=180)
    assert [p["status"] for p in final] == ["completed", "completed"]  # not pruned again
    assert final[1]["pruned"] is None
    events = await live.get("/api/v1/events", pipeline_id=weak, type="pipeline_pruned")
    assert len(events["entries"]) == 1
