"""Confidence sequences: valid at every look over 1,000 simulated runs, where Wilson is not.

Each run shuffles a fixed population of 0/1 scores (as `feistel-v1` does a dataset), cuts it
into shards, and after every shard compares each interval with the final value. The sequence's
terms are computed and folded by the same code executors and read models use.
"""

from __future__ import annotations

import random

import pytest

from inferno.events.model import shard_bounds
from inferno.events.sequences import Prefix, shard_terms
from inferno.stats.metrics import fpc, wilson_interval

ROWS, SHARDS, RUNS, CONFIDENCE = 1000, 20, 1000, 0.95


def _run(population: list[float], rng: random.Random) -> tuple[bool, bool]:
    """Whether the sequence and Wilson covered the final mean at every shard boundary."""
    order = population[:]
    rng.shuffle(order)
    final = sum(order) / ROWS
    prefix = Prefix()
    seen = 0.0
    sequence_held = wilson_held = True
    for shard in range(SHARDS):
        start, end = shard_bounds(ROWS, SHARDS, shard)
        values: list[float | None] = list(order[start:end])
        prefix.absorb(shard_terms({"m": values}, start, ROWS, CONFIDENCE))
        seen += sum(order[start:end])
        bounds = prefix.bounds("m", CONFIDENCE, ROWS)
        assert bounds is not None
        sequence_held &= bounds[0] <= final <= bounds[1]
        if end < ROWS:
            low, high = wilson_interval(seen / end, end, CONFIDENCE, fpc(end, ROWS))
            wilson_held &= low <= final <= high
    return sequence_held, wilson_held


@pytest.mark.parametrize("rate", [0.5, 0.8])
def test_the_sequence_covers_the_final_value_at_every_look(rate):
    rng = random.Random(2026)
    population = [1.0] * int(ROWS * rate) + [0.0] * (ROWS - int(ROWS * rate))
    held = [_run(population, rng) for _ in range(RUNS)]
    sequence = sum(s for s, _ in held) / RUNS
    wilson = sum(w for _, w in held) / RUNS
    print(f"\nrate {rate}: every look covered in {sequence:.1%} (sequence), {wilson:.1%} (wilson)")
    assert sequence >= 0.95
    assert wilson < 0.85  # the fixed-sample interval is not valid at every look (~70 %)


def test_out_of_order_shards_wait_for_the_gap_and_fold_the_same():
    rng = random.Random(7)
    values = [float(rng.random() < 0.6) for _ in range(ROWS)]
    parts = []
    for shard in range(SHARDS):
        start, end = shard_bounds(ROWS, SHARDS, shard)
        part: list[float | None] = list(values[start:end])
        parts.append(shard_terms({"m": part}, start, ROWS, CONFIDENCE))
    in_order, shuffled = Prefix(), Prefix()
    for terms in parts:
        in_order.absorb(terms)
    late = parts[1:5] + parts[:1] + parts[5:]
    for i, terms in enumerate(late):
        shuffled.absorb(terms)
        if i < 4:
            assert shuffled.rows == 0
            assert shuffled.bounds("m", CONFIDENCE, ROWS) is None
    assert shuffled.rows == in_order.rows == ROWS
    assert shuffled.bounds("m", CONFIDENCE, ROWS) == pytest.approx(
        in_order.bounds("m", CONFIDENCE, ROWS)
    )
    assert shuffled.bounds("m", CONFIDENCE, ROWS) == (sum(values) / ROWS,) * 2  # all rows in


def test_rows_without_a_score_widen_the_interval_to_cover_either_way():
    scored: list[float | None] = [1.0, 0.0] * 50
    failed: list[float | None] = [None if i % 10 in (0, 5) else v for i, v in enumerate(scored)]
    bounds = {}
    for name, values in (("scored", scored), ("failed", failed)):
        prefix = Prefix()
        prefix.absorb(shard_terms({"m": values}, 0, ROWS, CONFIDENCE))
        bounds[name] = prefix.bounds("m", CONFIDENCE, ROWS)
    assert bounds["failed"][0] < bounds["scored"][0] < bounds["scored"][1] < bounds["failed"][1]


def test_a_metric_the_sequence_does_not_track_has_no_bounds():
    prefix = Prefix()
    assert prefix.bounds("m", CONFIDENCE, ROWS) is None
    prefix.absorb(shard_terms({"m": [1.0]}, 0, ROWS, CONFIDENCE))
    assert prefix.bounds("other", CONFIDENCE, ROWS) is None
