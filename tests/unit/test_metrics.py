"""Live metrics: exact merging of per-shard statistics, confidence intervals with the
finite-population correction, latency percentiles, throughput and cost."""

from __future__ import annotations

import itertools
import math
import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferno.events.budgets import estimated_cost
from inferno.events.events import ExperimentCreated, ShardCompleted
from inferno.events.model import (
    LATENCY_BUCKETS_MS,
    EvalSpec,
    MetricStats,
    PipelineSpec,
    Scorer,
    ShardStats,
    merge_metrics,
)
from inferno.events.sequences import Prefix, shard_terms
from inferno.executor.backends.base import GenerationRequest
from inferno.executor.backends.sim import open_sim
from inferno.executor.evaluation import RowResult, evaluate, reference, render, stats_of
from inferno.readmodels import ReadModel, apply_event
from inferno.stats.metrics import (
    fpc,
    hoeffding_interval,
    is_binary,
    latency_percentile,
    mean,
    method_for,
    metric_summaries,
    metric_summary,
    normal_interval,
    rows_per_s,
    summary,
    variance,
    wilson_interval,
)

scores = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


def _row(i: int, value: float) -> RowResult:
    return RowResult(
        row_index=i,
        prompt="p",
        output="o",
        scores={"m": value},
        prompt_tokens=i % 5,
        completion_tokens=i % 3,
        latency_ms=(i * 97) % 70_000,
    )


def _cut(n: int, cuts: list[int]) -> list[tuple[int, int]]:
    """Arbitrary contiguous shards of n rows (some may be empty)."""
    points = sorted({0, n, *(c % (n + 1) for c in cuts)})
    return list(itertools.pairwise(points))


@settings(max_examples=300, deadline=None)
@given(st.lists(scores, min_size=1, max_size=200), st.lists(st.integers(0, 10_000), max_size=12))
def test_merged_shard_statistics_equal_statistics_over_all_rows(values, cuts):
    rows = [_row(i, v) for i, v in enumerate(values)]
    merged: dict[str, MetricStats] = {}
    for start, end in _cut(len(rows), cuts):
        merged = merge_metrics(merged, stats_of(rows[start:end]).metrics)
    stats = merged["m"]
    assert stats.count == len(values)
    assert (stats.minimum, stats.maximum) == (min(values), max(values))
    assert mean(stats) == pytest.approx(statistics.fmean(values), rel=1e-9, abs=1e-6)
    if len(values) > 1:
        # Σx² − (Σx)²/n cancels: compare on the scale of the values, as the api shows them
        scale = max(1.0, statistics.fmean(v * v for v in values))
        assert variance(stats) == pytest.approx(
            statistics.variance(values), rel=1e-6, abs=1e-9 * scale
        )


@settings(max_examples=200, deadline=None)
@given(st.lists(scores, min_size=1, max_size=120), st.lists(st.integers(0, 10_000), max_size=8))
def test_the_fold_merges_shards_to_the_statistics_of_all_rows(values, cuts):
    """Through the read model's fold: metrics, tokens, latency histogram, busy time, rows."""
    rows = [_row(i, v) for i, v in enumerate(values)]
    shards = _cut(len(rows), cuts)
    model = ReadModel()
    spec = PipelineSpec(pipeline_name="p", pipeline_type="sim")
    apply_event(
        model,
        0,
        ExperimentCreated(
            at=0.0,
            experiment_id="e",
            context_id="c",
            experiment_name="e",
            dataset_ref="sha256-0",
            row_count=len(rows),
            num_shards=len(shards),
            pipelines=[spec],
            first_pipeline_id=1,
        ),
    )
    for shard, (start, end) in enumerate(shards):
        stats = stats_of(rows[start:end], duration_s=0.25)
        event = ShardCompleted(
            at=1.0, pipeline_id=1, shard=shard, attempt=1, executor_id="x", stats=stats
        )
        apply_event(model, 0, event)
    whole = stats_of(rows)
    pipeline = model.pipelines[1]
    assert pipeline.rows_processed == whole.rows
    assert (pipeline.prompt_tokens, pipeline.completion_tokens) == (
        whole.prompt_tokens,
        whole.completion_tokens,
    )
    assert pipeline.latency_ms_buckets == whole.latency_ms_buckets
    assert pipeline.busy_s == pytest.approx(0.25 * len(shards))
    got, want = pipeline.metrics["m"], whole.metrics["m"]
    assert (got.count, got.minimum, got.maximum) == (want.count, want.minimum, want.maximum)
    assert got.total == pytest.approx(want.total, rel=1e-9, abs=1e-6)


# intervals against known values


def test_wilson_known_values():
    # 81 of 263 (Wilson 1927 / Newcombe 1998's example); 0 of 10
    low, high = wilson_interval(81 / 263, 263, 0.95)
    assert (low, high) == (pytest.approx(0.25529, abs=1e-5), pytest.approx(0.36621, abs=1e-5))
    low, high = wilson_interval(0.0, 10, 0.95)
    assert (low, high) == (pytest.approx(0.0, abs=1e-12), pytest.approx(0.27753, abs=1e-5))


def test_normal_known_values():
    values = [1.0, 2.0, 3.0, 4.0, 5.0]  # mean 3, sample variance 2.5
    stats = MetricStats(5, 15.0, 55.0, 1.0, 5.0)
    assert (mean(stats), variance(stats)) == (3.0, 2.5)
    assert variance(stats) == statistics.variance(values)
    low, high = normal_interval(3.0, 2.5, 5, 0.95)
    assert (low, high) == (pytest.approx(1.61410, abs=1e-5), pytest.approx(4.38590, abs=1e-5))
    low, high = normal_interval(3.0, 2.5, 5, 0.99)  # z = 2.5758
    assert high - 3.0 == pytest.approx(2.575829 * math.sqrt(0.5), abs=1e-5)


def test_hoeffding_known_values():
    # half-width (b − a)·sqrt(ln(2/α) / 2n): n = 100, α = 0.05 -> sqrt(ln 40 / 200) = 0.135811
    low, high = hoeffding_interval(0.5, 100, 0.0, 1.0, 0.95)
    assert (high - 0.5, 0.5 - low) == (pytest.approx(0.135811, abs=1e-6),) * 2
    low, high = hoeffding_interval(5.0, 100, 0.0, 10.0, 0.95)
    assert high - 5.0 == pytest.approx(1.35811, abs=1e-5)


def test_finite_population_correction():
    assert fpc(100, 1000) == pytest.approx(math.sqrt(900 / 999))
    assert fpc(1000, 1000) == 0.0
    assert fpc(1, 2) == 1.0
    # applied to each method: the half-width scales by it (Wilson: z·fpc in place of z)
    f = fpc(100, 1000)
    _low, high = normal_interval(0.0, 1.0, 100, 0.95, f)
    assert high == pytest.approx(1.959964 * 0.1 * f, abs=1e-6)
    _low, high = hoeffding_interval(0.5, 100, 0.0, 1.0, 0.95, f)
    assert high - 0.5 == pytest.approx(0.135811 * f, abs=1e-6)
    assert wilson_interval(0.3, 100, 0.95, f) == pytest.approx(
        wilson_interval(0.3, 100, 1 - 2 * (1 - statistics.NormalDist().cdf(1.959964 * f)))
    )


def _binary(ones: int, n: int) -> MetricStats:
    return MetricStats(n, float(ones), float(ones), float(ones < n), float(ones > 0))


def test_summary_shape_and_collapse_at_the_whole_population():
    out = summary(_binary(30, 100), 1000, "wilson", 0.9, binary_scorer=True)
    assert set(out) == {
        "value",
        "lower_bound",
        "upper_bound",
        "confidence_level",
        "ci_method",
        "anytime_valid",
        "count",
    }
    assert out["anytime_valid"] is False  # a fixed-sample interval, labelled as such
    assert (out["value"], out["count"], out["confidence_level"]) == (0.3, 100, 0.9)
    assert out["lower_bound"] < 0.3 < out["upper_bound"]
    done = summary(_binary(30, 100), 100, "wilson", 0.95, binary_scorer=True)
    assert done["lower_bound"] == done["value"] == done["upper_bound"] == 0.3
    empty = summary(MetricStats(), 100, "normal", 0.95)
    assert (empty["value"], empty["lower_bound"], empty["count"]) == (None, None, 0)
    one = summary(MetricStats(1, 3.0, 9.0, 3.0, 3.0), 100, "normal", 0.95)
    assert (one["value"], one["lower_bound"], one["upper_bound"]) == (3.0, None, None)


def test_method_defaults_and_fallbacks():
    spec = EvalSpec(scorers=[Scorer(name="exact_match", target="a"), Scorer(name="m:f")])
    assert method_for(spec, "exact_match") == "wilson"
    assert method_for(spec, "m:f") == "normal"
    assert method_for(EvalSpec(ci_method="hoeffding"), "exact_match") == "hoeffding"
    graded = MetricStats(3, 1.5, 0.75, 0.25, 0.75)  # 0.25, 0.5, 0.75
    assert not is_binary(graded)
    assert is_binary(_binary(3, 5))
    # wilson asked for a metric that is not 0/1: normal, and the answer says so
    assert summary(graded, 10, "wilson", 0.95)["ci_method"] == "normal"
    # hoeffding: [0, 1] for a 0/1 scorer, the observed [min, max] otherwise
    wide = summary(_binary(5, 10), 1_000_000, "hoeffding", 0.95, binary_scorer=True)
    narrow = summary(graded, 1_000_000, "hoeffding", 0.95)
    half = math.sqrt(math.log(40) / 6) * fpc(3, 1_000_000)
    assert narrow["upper_bound"] - 0.5 == pytest.approx(0.5 * half)
    assert wide["upper_bound"] == pytest.approx(
        min(0.5 + math.sqrt(math.log(40) / 20) * fpc(10, 1_000_000), 1.0)
    )
    # binary scorers' bounds stay in [0, 1]
    edge = summary(_binary(10, 10), 100, "normal", 0.95, binary_scorer=True)
    assert edge["upper_bound"] <= 1.0
    summaries = metric_summaries({"exact_match": _binary(3, 4), "m:f": graded}, spec, population=20)
    assert [s["ci_method"] for s in summaries.values()] == ["wilson", "normal"]


def test_a_shuffled_runs_0_1_metrics_default_to_the_confidence_sequence():
    spec = EvalSpec(scorers=[Scorer(name="exact_match", target="a"), Scorer(name="m:f")])
    values: list[float | None] = [1.0, 0.0, 1.0, 1.0] * 25
    sequence = Prefix()
    stats = _binary(75, 100)
    sequence.absorb(shard_terms({"exact_match": values}, 0, 1000, 0.95))
    assert method_for(spec, "exact_match", sequence) == "confidence_sequence"
    assert method_for(spec, "m:f", sequence) == "normal"  # no known range: fixed-sample
    out = metric_summary("exact_match", stats, spec, 1000, sequence)
    assert (out["ci_method"], out["anytime_valid"], out["sequence_rows"]) == (
        "confidence_sequence",
        True,
        100,
    )
    assert (out["lower_bound"], out["upper_bound"]) == sequence.bounds("exact_match", 0.95, 1000)
    assert out["lower_bound"] < out["value"] == 0.75 < out["upper_bound"]
    wilson = metric_summary("exact_match", stats, spec, 1000)
    assert out["upper_bound"] - out["lower_bound"] > wilson["upper_bound"] - wilson["lower_bound"]
    # asked for, but the rows were not shuffled (no sequence): wilson, and the answer says so
    asked = EvalSpec(scorers=spec.scorers, ci_method="confidence_sequence")
    fallback = metric_summary("exact_match", stats, asked, 1000)
    assert (fallback["ci_method"], fallback["anytime_valid"]) == ("wilson", False)


# narrowing on a realistic run, and coverage


async def _sim_run(model: str, rows: int = 480, shard_rows: int = 40) -> list[ShardStats]:
    """Per-shard statistics of a sim pipeline (accuracy 0.7) through the real eval path."""
    data = [{"q": f"{i} + {i}?", "answer": str(2 * i)} for i in range(rows)]
    spec = EvalSpec(prompt="{q}", scorers=[Scorer(name="exact_match", target="answer")])
    pipeline = PipelineSpec(
        pipeline_name="p", pipeline_type="sim", model_config={"model": model, "accuracy": 0.7}
    )
    shard_stats = []
    async with open_sim(pipeline) as engine:
        for start in range(0, rows, shard_rows):
            chunk = data[start : start + shard_rows]
            requests = [
                GenerationRequest(
                    prompt=render(spec.prompt, r), key=str(start + i), reference=reference(spec, r)
                )
                for i, r in enumerate(chunk)
            ]
            generations = await engine.generate(requests, {})
            results = [
                evaluate(spec, start + i, r, "p", g)
                for i, (r, g) in enumerate(zip(chunk, generations, strict=True))
            ]
            shard_stats.append(stats_of(results))
    return shard_stats


@pytest.mark.parametrize("method", ["wilson", "normal", "hoeffding"])
async def test_the_interval_narrows_to_the_final_value_as_shards_complete(method):
    """A sim pipeline over 480 rows in 12 shards: after each shard the interval is no wider
    than before, and it has width 0 once all rows are in."""
    merged: dict[str, MetricStats] = {}
    intervals = []
    for stats in await _sim_run("m"):
        merged = merge_metrics(merged, stats.metrics)
        intervals.append(summary(merged["exact_match"], 480, method, 0.95, binary_scorer=True))
    final = intervals[-1]["value"]
    assert 0.6 < final < 0.8
    widths = [i["upper_bound"] - i["lower_bound"] for i in intervals]
    assert all(b <= a for a, b in itertools.pairwise(widths)), widths
    assert widths[0] > 0.1
    assert widths[-1] == 0.0
    assert intervals[-1]["lower_bound"] == final == intervals[-1]["upper_bound"]
    if method == "hoeffding":  # conservative: it holds the final value at every step here
        assert all(i["lower_bound"] <= final <= i["upper_bound"] for i in intervals)


@pytest.mark.parametrize(
    ("method", "graded", "at_least"),
    [
        ("wilson", False, 0.93),
        ("normal", False, 0.93),
        ("normal", True, 0.93),
        ("hoeffding", False, 0.95),
        ("hoeffding", True, 0.95),
    ],
)
def test_the_interval_contains_the_final_value_as_often_as_its_level_says(method, graded, at_least):
    """95% intervals after each of 11 partial shards hold the value the pipeline ends with in
    about 95% of (run, step) pairs: the finite-population correction is neither too bold nor
    too timid. (Per step, not for all steps at once: about 30% of runs see some step miss.)"""
    rng = random.Random(7)
    population, shard_rows, runs = 480, 40, 600
    held = total = 0
    for _ in range(runs):
        values = [
            (rng.betavariate(2, 5) if graded else float(rng.random() < 0.7))
            for _ in range(population)
        ]
        final = math.fsum(values) / population
        for n in range(shard_rows, population, shard_rows):
            part = values[:n]
            stats = MetricStats(
                n, math.fsum(part), math.fsum(v * v for v in part), min(part), max(part)
            )
            out = summary(stats, population, method, 0.95, binary_scorer=not graded)
            held += out["lower_bound"] <= final <= out["upper_bound"]
            total += 1
    assert held / total >= at_least


# latency, throughput, cost


def test_latency_percentiles_interpolate_within_buckets():
    buckets = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    assert latency_percentile(buckets, 0.5) is None
    buckets[LATENCY_BUCKETS_MS.index(500)] = 10  # 10 rows in (200, 500] ms
    assert latency_percentile(buckets, 0.5) == pytest.approx(350.0)
    assert latency_percentile(buckets, 0.95) == pytest.approx(485.0)
    buckets[0] = 10  # and 10 in [0, 1] ms
    assert latency_percentile(buckets, 0.25) == pytest.approx(0.5)
    assert latency_percentile(buckets, 0.5) == pytest.approx(1.0)
    slow = [0] * len(LATENCY_BUCKETS_MS) + [3]  # past the last bound: reported as 60 s
    assert latency_percentile(slow, 0.95) == 60_000.0


def test_rows_per_s_and_cost():
    assert rows_per_s(120, 4.0) == 30.0
    assert rows_per_s(0, 0.0) is None
    prices = {"price_per_1k_prompt_tokens": 0.5, "price_per_1k_completion_tokens": 1.5}
    assert estimated_cost(2000, 1000, prices) == pytest.approx(2.5)
    assert estimated_cost(2000, 1000, {"price_per_1k_completion_tokens": 2}) == 2.0
    assert estimated_cost(2000, 1000, {"base_url": "http://x"}) is None
    assert estimated_cost(2000, 1000, {"price_per_1k_prompt_tokens": "cheap"}) is None


def test_shard_stats_without_latencies_leave_the_histogram_alone():
    model = ReadModel()
    apply_event(
        model,
        0,
        ExperimentCreated(
            at=0.0,
            experiment_id="e",
            context_id="c",
            experiment_name="e",
            dataset_ref="sha256-0",
            row_count=2,
            num_shards=2,
            pipelines=[PipelineSpec(pipeline_name="p", pipeline_type="sim")],
            first_pipeline_id=1,
        ),
    )
    apply_event(model, 0, ShardCompleted(at=1, pipeline_id=1, shard=0, attempt=1, executor_id="x"))
    assert model.pipelines[1].latency_ms_buckets == []
    stats = ShardStats(rows=1, latency_ms_buckets=[1, 2, 3], errors=1, duration_s=0.5)
    apply_event(
        model,
        0,
        ShardCompleted(at=1, pipeline_id=1, shard=1, attempt=1, executor_id="x", stats=stats),
    )
    pipeline = model.pipelines[1]
    assert (pipeline.latency_ms_buckets, pipeline.row_errors, pipeline.busy_s) == (
        [1, 2, 3],
        1,
        0.5,
    )
