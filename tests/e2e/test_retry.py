"""`inferno retry` on a real cluster: an `openai` pipeline fails while its endpoint is down; once
the endpoint is back, a retry runs only the shards it had not completed, and every row ends
answered exactly once. A pipeline that completed with rows the endpoint failed on is retried for
just those rows, and its results and metrics then cover every row once."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from inferno.events.events import ShardCompleted

if TYPE_CHECKING:
    from conftest import Live

ROWS, SHARDS = [{"question": f"{i} + 1", "answer": str(i + 1)} for i in range(24)], 24


async def test_retry_runs_only_the_incomplete_shards_after_a_failure(
    shared_live: Live, openai_server: Any
) -> None:
    live = shared_live
    body = {
        "experiment_name": "retried",
        "num_shards": SHARDS,
        "dataset": {"rows": ROWS},
        "eval": {"prompt": "{question}", "scorers": [{"name": "numeric", "target": "answer"}]},
        # one try per request: a shard fails at once while the server is down
        "pipelines": [live.openai(openai_server, client={"max_attempts": 1})],
        "max_attempts": 1,
    }
    latency = openai_server.latency_s
    # a shard (one row) takes 0.5 s and 4 run at once: 6 rounds, so the endpoint goes down with
    # most of them still to run, however late this test gets to it
    openai_server.latency_s = 0.5
    try:
        created = await live.create_experiment(body)
        pid = created["pipelines"][0]["pipeline_id"]

        async def some_done() -> bool:
            return (await live.pipeline(pid))["shards_completed"] >= 2

        await live.until(some_done, "two shards done", 120)
        openai_server.down = True
        [failed] = await live.settled(pid, timeout=120)
    finally:
        openai_server.down, openai_server.latency_s = False, latency
    assert failed["status"] == "failed", failed
    before = failed["shards_completed"]
    assert 2 <= before < SHARDS, failed
    print(f"failed with {before} of {SHARDS} shards done: {failed['error']}")

    code, out = await live.cli("retry", str(pid), "--wait", "60")
    assert code == 0, out
    assert out.startswith(f"retry pipeline {pid}: ic_id"), out
    [done] = await live.settled(pid, timeout=120)
    outcome = (done["status"], done["shards_completed"], done["error"])
    assert outcome == ("completed", SHARDS, None), outcome
    assert done["metrics"]["numeric"]["value"] == 1.0  # every row answered right

    completions = [
        e.shard
        for _, e in await live.events()
        if isinstance(e, ShardCompleted) and e.pipeline_id == pid
    ]
    assert sorted(completions) == list(range(SHARDS))  # each once: none done before is redone
    response = await live.http.get(f"/api/v1/pipelines/{pid}/results")
    rows = [json.loads(line) for line in response.content.splitlines()]
    assert sorted(r["row_index"] for r in rows) == list(range(len(ROWS)))
    history = await live.get(
        "/api/v1/events", pipeline_id=pid, type="retry_pipeline,pipeline_retried"
    )
    assert [e["type"] for e in history["entries"]] == ["retry_pipeline", "pipeline_retried"]


async def test_retry_answers_the_rows_a_completed_pipeline_failed_on(
    shared_live: Live, openai_server: Any
) -> None:
    live = shared_live
    broken = {"5 + 1", "17 + 1"}
    answer = openai_server.answer

    def patchy(prompt: str) -> str:
        if prompt in broken:
            raise ValueError("this prompt fails today")
        return answer(prompt)

    body = {
        "experiment_name": "patchy",
        "num_shards": 8,
        "dataset": {"rows": ROWS},
        "eval": {"prompt": "{question}", "scorers": [{"name": "numeric", "target": "answer"}]},
        "pipelines": [live.openai(openai_server, client={"max_attempts": 1})],
    }
    openai_server.answer = patchy
    try:
        created = await live.create_experiment(body)
        pid = created["pipelines"][0]["pipeline_id"]
        [patched] = await live.settled(pid, timeout=120)
    finally:
        openai_server.answer = answer
    assert (patched["status"], patched["row_errors"]) == ("completed", 2), patched
    assert patched["metrics"]["numeric"]["count"] == len(ROWS) - 2

    code, out = await live.cli("retry", str(pid), "--wait", "60")
    assert code == 0, out
    [done] = await live.settled(pid, timeout=120)
    assert (done["status"], done["row_errors"]) == ("completed", 0), done
    assert done["metrics"]["numeric"]["count"] == len(ROWS)
    assert done["metrics"]["numeric"]["value"] == 1.0

    response = await live.http.get(f"/api/v1/pipelines/{pid}/results")
    rows = [json.loads(line) for line in response.content.splitlines()]
    assert sorted(r["row_index"] for r in rows) == list(range(len(ROWS)))  # each row once
    assert all(r.get("error") is None for r in rows), rows
    repaired = {r["row_index"]: r["output"] for r in rows if r["row_index"] in (5, 17)}
    assert repaired == {5: "6", 17: "18"}, repaired
    completions = [
        e for _, e in await live.events() if isinstance(e, ShardCompleted) and e.pipeline_id == pid
    ]
    repairs = [e.stats.rows for e in completions if e.attempt > 1]
    assert len(completions) == 8 + len(repairs)  # only the shards with a failed row ran again
    assert sum(repairs) == 2  # and in them only those rows
