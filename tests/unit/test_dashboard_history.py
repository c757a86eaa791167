"""The charts' data (`inferno.api.routes_ui.metric_history`): each pipeline's metric after every
shard, folded as the read model folds it, so the last point is what `/pipelines` shows."""

from __future__ import annotations

import msgspec

from inferno.api.routes_ui import ASSETS, is_ui_path, metric_history
from inferno.events.model import EvalSpec, MetricStats, Scorer, ShardStats
from inferno.stats import metrics

SPEC = EvalSpec(scorers=[Scorer(name="exact_match", target="answer")])


def shard(correct: int, rows: int = 12) -> ShardStats:
    stats = MetricStats(rows, float(correct), float(correct), 0.0, 1.0)
    return ShardStats(rows=rows, metrics={"exact_match": stats})


def test_a_point_per_shard_ending_at_the_pipelines_metric():
    shards = [(1, shard(12)), (2, shard(3)), (1, shard(6)), (9, shard(1)), (2, shard(9))]
    history = metric_history([1, 2], shards, SPEC, [96])["exact_match"]
    assert set(history) == {"1", "2"}  # pipeline 9 is another experiment's
    assert [p["shards"] for p in history["1"]] == [1, 2]
    assert [p["value"] for p in history["1"]] == [1.0, 0.75]
    merged = MetricStats(24, 12.0, 12.0, 0.0, 1.0)
    assert history["2"][-1] == {
        "shards": 2,
        **metrics.metric_summary("exact_match", merged, SPEC, 96),
    }
    assert all(p["lower_bound"] <= p["value"] <= p["upper_bound"] for p in history["2"])


def test_stats_read_back_from_a_stored_payload():
    """The route reads shard_completed payloads as stored (JSON builtins) back into ShardStats."""
    stored = msgspec.json.decode(msgspec.json.encode(shard(5)))
    assert msgspec.convert(stored, ShardStats) == shard(5)


def test_only_the_page_and_its_assets_are_open():
    assert is_ui_path("/")
    assert is_ui_path("/ui/app.js")
    assert not is_ui_path("/api/v1/experiments")
    assert not is_ui_path("/uix")
    assert {"index.html", "app.js", "api.js", "chart.js", "style.css"} <= set(ASSETS)
