"""Rows run in a seeded random order: on a file sorted by difficulty the first shards' metric is
within its interval of the final value, where file order (`shuffle: false`) is far outside it.

A real cluster (two executors, two schedulers). The sim engine answers every row with its
reference (`accuracy: 1`, the first scorer's target `hint`); `exact_match` scores the answer
against `answer`, which equals the hint on the easy rows only, and the easy rows come first.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from inferno.events.events import ShardCompleted
from inferno.events.model import EvalSpec, MetricStats
from inferno.events.sequences import Prefix
from inferno.stats.metrics import metric_summary

if TYPE_CHECKING:
    from conftest import Live

ROWS, EASY, SHARDS, FIRST = 600, 300, 20, 3
DATASET = [
    {"question": f"q{i}", "hint": str(i), "answer": str(i) if i < EASY else "hard"}
    for i in range(ROWS)
]
EVAL = {
    "prompt": "{question}",
    "scorers": [
        {"name": "contains", "target": "hint"},
        {"name": "exact_match", "target": "answer"},
    ],
}


def body(live: Live, name: str, **order: Any) -> dict[str, Any]:
    pipeline = live.sim(name, latency_ms=0, accuracy=1.0)
    return {
        "experiment_name": name,
        "num_shards": SHARDS,
        "dataset": {"rows": DATASET},
        "eval": EVAL,
        "pipelines": [pipeline],
        **order,
    }


def early(events: list[tuple[int, Any]], pipeline_id: int) -> tuple[MetricStats, Prefix | None]:
    """`exact_match` over the pipeline's first FIRST shards (the first dispatched), folded as
    the read model folds them in log order (statistics merged; the sequence's terms)."""
    stats, sequence = MetricStats(), None
    done = [
        e
        for _, e in events
        if isinstance(e, ShardCompleted) and e.pipeline_id == pipeline_id and e.shard < FIRST
    ]
    assert len(done) == FIRST
    for event in done:
        stats = stats.merged(event.stats.metrics["exact_match"])
        if event.stats.sequence is not None:
            sequence = sequence or Prefix()
            sequence.absorb(event.stats.sequence)
    return stats, sequence


async def test_early_shards_of_a_sorted_file_are_unbiased_only_when_shuffled(
    shared_live: Live,
) -> None:
    live = shared_live
    shuffled = await live.create_experiment(body(live, "sorted-shuffled", shuffle_seed=11))
    in_order = await live.create_experiment(body(live, "sorted-in-order", shuffle=False))
    ids = [e["pipelines"][0]["pipeline_id"] for e in (shuffled, in_order)]
    await live.settled(*ids, timeout=180)
    experiment = await live.get(f"/api/v1/experiments/{shuffled['experiment_id']}")
    assert (experiment["shuffle"], experiment["row_order"]) == (
        True,
        {"seed": 11, "permutation": "feistel-v1"},
    )
    assert (await live.get(f"/api/v1/experiments/{in_order['experiment_id']}"))["shuffle"] is False

    events = await live.events()
    spec = EvalSpec(confidence_level=0.95)
    final = EASY / ROWS
    for pid in ids:
        pipeline = await live.pipeline(pid)
        assert pipeline["metrics"]["exact_match"]["value"] == final  # the same rows in the end
    shuffled_stats, sequence = early(events, ids[0])
    assert sequence is not None  # a shuffled run reports the sequence's terms
    anytime = metric_summary("exact_match", shuffled_stats, spec, ROWS, sequence)
    fixed = metric_summary("exact_match", shuffled_stats, spec, ROWS)
    assert anytime["ci_method"] == "confidence_sequence"
    assert anytime["lower_bound"] <= final <= anytime["upper_bound"], anytime
    assert fixed["lower_bound"] <= final <= fixed["upper_bound"], fixed
    ordered_stats, no_sequence = early(events, ids[1])
    assert no_sequence is None  # file order is not a random order: no anytime-valid interval
    biased = metric_summary("exact_match", ordered_stats, spec, ROWS)
    for what, m in (("sequence", anytime), ("wilson", fixed), ("file order", biased)):
        print(
            f"first {FIRST} shards, {what}: {m['value']:.3f} in [{m['lower_bound']:.3f},"
            f" {m['upper_bound']:.3f}]; final {final:.3f}"
        )
    assert biased["value"] == 1.0
    assert biased["lower_bound"] > final + 0.3, biased  # far outside

    # results keep each row's own index, and every row ran exactly once
    indices = {}
    for pid in ids:
        response = await live.http.get(f"/api/v1/pipelines/{pid}/results")
        rows = [json.loads(line) for line in response.content.splitlines()]
        assert sorted(r["row_index"] for r in rows) == list(range(ROWS))
        assert all(r["scores"]["exact_match"] == float(r["row_index"] < EASY) for r in rows)
        indices[pid] = [r["row_index"] for r in rows]  # in shard order, each in position order
    assert indices[ids[1]] == list(range(ROWS))
    assert indices[ids[0]] != list(range(ROWS))
