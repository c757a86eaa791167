"""`inferno extend` on a real cluster: a completed experiment gets rows from a file; every
pipeline runs just the new shards, each row (old and new) ends answered once under its own
index, and the metrics and their confidence sequence cover all of them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from inferno.events.events import ShardCompleted

if TYPE_CHECKING:
    from conftest import Live

OLD = [{"question": f"{i} + 1", "answer": str(i + 1)} for i in range(24)]
NEW = [{"question": f"{i} + 2", "answer": str(i + 2)} for i in range(12)]


async def test_extend_runs_only_the_added_rows_and_metrics_cover_all(
    shared_live: Live, tmp_path: Path
) -> None:
    live = shared_live
    body = {
        "experiment_name": "growing",
        "num_shards": 4,
        "dataset": {"rows": OLD},
        "eval": {"prompt": "{question}", "scorers": [{"name": "exact_match", "target": "answer"}]},
        "pipelines": [
            live.sim("right", latency_ms=5, accuracy=1.0),
            live.sim("coin", latency_ms=5, accuracy=0.5),
        ],
    }
    created = await live.create_experiment(body)
    experiment_id = created["experiment_id"]
    right, coin = (p["pipeline_id"] for p in created["pipelines"])
    await live.settled(right, coin, timeout=120)

    added = tmp_path / "more.jsonl"
    added.write_text("".join(json.dumps(row) + "\n" for row in NEW))
    args = ["extend", experiment_id, str(added), "--shards", "3", "--wait", "60"]
    code, out = await live.cli(*args, "--reason", "more rows")
    assert code == 0, out
    assert out.startswith(f"extend experiment {experiment_id} → shards from 4:")

    done = await live.settled(right, coin, timeout=120)
    for p in done:
        assert (p["status"], p["shards_completed"], p["num_shards"]) == ("completed", 7, 7), p
        assert p["rows_processed"] == len(OLD) + len(NEW)
        assert p["metrics"]["exact_match"]["count"] == len(OLD) + len(NEW)
    metric = done[0]["metrics"]["exact_match"]
    assert (metric["value"], metric["ci_method"], metric["anytime_valid"]) == (
        1.0,
        "confidence_sequence",
        True,
    )
    assert metric["lower_bound"] == metric["upper_bound"] == 1.0  # every row is in: known

    detail = await live.get(f"/api/v1/experiments/{experiment_id}")
    assert (detail["row_count"], detail["num_shards"], detail["status"]) == (36, 7, "completed")
    [extension] = detail["extensions"]
    assert (extension["first_row"], extension["first_shard"], extension["row_count"]) == (24, 4, 12)

    response = await live.http.get(f"/api/v1/pipelines/{right}/results")
    rows = {r["row_index"]: r for r in map(json.loads, response.content.splitlines())}
    assert sorted(rows) == list(range(len(OLD) + len(NEW)))  # every row once, old and new
    assert rows[24 + 5]["prompt"] == NEW[5]["question"]  # an added row keeps its own index
    assert rows[5]["prompt"] == OLD[5]["question"]

    completions = [
        (e.pipeline_id, e.shard)
        for _, e in await live.events()
        if isinstance(e, ShardCompleted) and e.pipeline_id in (right, coin)
    ]
    assert sorted(completions) == sorted((p, s) for p in (right, coin) for s in range(7))
    history = await live.get(
        "/api/v1/events", pipeline_id=right, type="extend_experiment,experiment_extended"
    )
    assert [(e["type"], e["reason"]) for e in history["entries"]] == [
        ("extend_experiment", "more rows"),
        ("experiment_extended", "more rows"),
    ]


async def test_rows_that_lack_a_field_are_refused_by_name(shared_live: Live) -> None:
    live = shared_live
    created = await live.create_experiment(live.experiment_body(live.sim("s"), num_shards=2))
    experiment_id = created["experiment_id"]
    response = await live.http.post(
        f"/api/v1/experiments/{experiment_id}/extend",
        json={"dataset": {"rows": [{"q": "1 + 1"}]}, "num_shards": 1},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(
        "field 'dataset': the experiment's eval.prompt uses {question}, which the rows lack"
    )
    missing = await live.http.post(
        "/api/v1/experiments/exp-nope/extend",
        json={"dataset": {"rows": [{"question": "1"}]}, "num_shards": 1},
    )
    assert missing.status_code == 404, missing.text
