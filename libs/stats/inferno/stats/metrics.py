"""Live metrics from merged sufficient statistics (DESIGN §6): pure math, no I/O.

A metric's value is the mean score over the rows scored so far (n of the dataset's N). Its
confidence interval is for the mean over all N rows, so every method applies the
finite-population correction sqrt((N - n) / (N - 1)): the interval narrows as shards complete
and collapses to the value once every row is scored.

- `normal`: mean ± z·s/√n·fpc, s the sample standard deviation (undefined for n = 1).
- `wilson`: the Wilson score interval for a proportion, with z·fpc in place of z; for 0/1
  scores only (a metric with other values falls back to `normal`).
- `hoeffding`: mean ± (b − a)·√(ln(2/α) / 2n)·fpc, distribution-free given the range [a, b]:
  [0, 1] for 0/1 scorers, else the metric's observed [min, max].
- `confidence_sequence`: valid at every look, not at one fixed sample size
  (`inferno.events.sequences`); for 0/1 scorers of a shuffled experiment only.

The first three are fixed-sample intervals: valid for one look decided in advance, not for
watching a run and stopping when it looks good (each answer says `anytime_valid: false`).
z = NormalDist().inv_cdf((1 + confidence) / 2). The method is the eval spec's `ci_method`, else
the confidence sequence for 0/1 scorers of a shuffled experiment, wilson for other 0/1 scorers
and normal for the rest; what a metric actually used is reported beside it (a method that does
not apply falls back: confidence_sequence to wilson, wilson to normal). Bounds never leave a
known range ([0, 1] for 0/1 scorers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any, Literal

from inferno.events.model import LATENCY_BUCKETS_MS, EvalSpec, MetricStats
from inferno.events.scorers import BINARY_SCORERS
from inferno.events.sequences import Prefix, Strata

CiMethod = Literal["normal", "wilson", "hoeffding", "confidence_sequence"]
CI_METHODS: tuple[str, ...] = ("normal", "wilson", "hoeffding", "confidence_sequence")


def mean(stats: MetricStats) -> float | None:
    return stats.total / stats.count if stats.count else None


def variance(stats: MetricStats) -> float | None:
    """The sample variance (n − 1 in the denominator); None below two values."""
    n = stats.count
    if n < 2:
        return None
    return max((stats.total_sq - stats.total * stats.total / n) / (n - 1), 0.0)


def is_binary(stats: MetricStats) -> bool:
    """Every value is 0 or 1: in [0, 1], x = x² only at 0 and 1, so Σx = Σx² says it exactly."""
    return stats.minimum >= 0 and stats.maximum <= 1 and stats.total == stats.total_sq


def fpc(n: int, population: int) -> float:
    """sqrt((N − n) / (N − 1)): 1 for a sample from an endless population, 0 once n = N."""
    if n >= population:
        return 0.0
    return math.sqrt((population - n) / (population - 1))


def z_value(confidence: float) -> float:
    return NormalDist().inv_cdf((1 + confidence) / 2)


def normal_interval(
    value: float, var: float, n: int, confidence: float, correction: float = 1.0
) -> tuple[float, float]:
    half = z_value(confidence) * math.sqrt(var / n) * correction
    return value - half, value + half


def wilson_interval(
    p: float, n: int, confidence: float, correction: float = 1.0
) -> tuple[float, float]:
    z = z_value(confidence) * correction
    z2 = z * z
    denominator = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(max(p * (1 - p) / n + z2 / (4 * n * n), 0.0))
    return max(center - half, 0.0), min(center + half, 1.0)


def hoeffding_interval(
    value: float, n: int, low: float, high: float, confidence: float, correction: float = 1.0
) -> tuple[float, float]:
    half = (high - low) * math.sqrt(math.log(2 / (1 - confidence)) / (2 * n)) * correction
    return value - half, value + half


def method_for(spec: EvalSpec, metric: str, sequence: Prefix | Strata | None = None) -> CiMethod:
    """The experiment's choice, else the confidence sequence where one tracks the metric, else
    wilson for a 0/1 scorer and normal for anything else."""
    if spec.ci_method is not None:
        return spec.ci_method
    if sequence is not None and sequence.tracks(metric):
        return "confidence_sequence"
    return "wilson" if metric in BINARY_SCORERS else "normal"


def summary(
    stats: MetricStats,
    population: int,
    method: CiMethod,
    confidence: float,
    *,
    binary_scorer: bool = False,
    sequence: Prefix | Strata | None = None,
    metric: str = "",
) -> dict[str, Any]:
    """`{value, lower_bound, upper_bound, confidence_level, ci_method, anytime_valid, count}`
    of one metric (and `sequence_rows`, the rows the sequence covers, for a sequence). Bounds
    are None where the method cannot say (no rows; normal with one row; a sequence before its
    first shard in position order)."""
    n = stats.count
    if method == "confidence_sequence" and (sequence is None or not sequence.tracks(metric)):
        method = "wilson"
    out: dict[str, Any] = {
        "value": None,
        "lower_bound": None,
        "upper_bound": None,
        "confidence_level": confidence,
        "ci_method": method,
        "anytime_valid": method == "confidence_sequence",
        "count": n,
    }
    if method == "confidence_sequence":
        assert sequence is not None
        out["sequence_rows"] = sequence.rows
        covered = sequence.bounds(metric, confidence, population)
        if covered is not None:
            out["lower_bound"], out["upper_bound"] = covered
        if n:
            out["value"] = stats.total / n
        return out
    if n == 0:
        return out
    value = stats.total / n
    binary = is_binary(stats)
    if method == "wilson" and not binary:
        method = out["ci_method"] = "normal"
    correction = fpc(n, population)
    bounds: tuple[float, float] | None
    if correction == 0.0:
        bounds = (value, value)
    elif method == "wilson":
        bounds = wilson_interval(value, n, confidence, correction)
    elif method == "hoeffding":
        low, high = (0.0, 1.0) if binary_scorer else (stats.minimum, stats.maximum)
        bounds = hoeffding_interval(value, n, low, high, confidence, correction)
    else:
        var = variance(stats)
        bounds = None if var is None else normal_interval(value, var, n, confidence, correction)
    if bounds is not None:
        low, high = bounds
        if binary_scorer:
            low, high = max(low, 0.0), min(high, 1.0)
        out["lower_bound"], out["upper_bound"] = low, high
    out["value"] = value
    return out


def metric_summary(
    name: str,
    stats: MetricStats,
    spec: EvalSpec,
    population: int,
    sequence: Prefix | Strata | None = None,
) -> dict[str, Any]:
    """`summary` of metric `name` with the experiment's interval settings; `sequence` is the
    pipeline's confidence-sequence fold, where it has one."""
    return summary(
        stats,
        population,
        method_for(spec, name, sequence),
        spec.confidence_level,
        binary_scorer=name in BINARY_SCORERS,
        sequence=sequence,
        metric=name,
    )


def metric_summaries(
    metrics: dict[str, MetricStats],
    spec: EvalSpec,
    population: int,
    sequence: Prefix | Strata | None = None,
) -> dict[str, dict[str, Any]]:
    """Every metric of a pipeline, by name."""
    return {
        name: metric_summary(name, stats, spec, population, sequence)
        for name, stats in sorted(metrics.items())
    }


def latency_percentile(buckets: Sequence[int], q: float) -> float | None:
    """The q-quantile (0 < q <= 1) of a `LATENCY_BUCKETS_MS` histogram, interpolated linearly
    inside its bucket (as Prometheus' histogram_quantile does); a quantile in the last, open
    bucket is reported as its lower bound (60 s). None without rows."""
    total = sum(buckets)
    if not total:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(buckets):
        if count and seen + count >= rank:
            if i >= len(LATENCY_BUCKETS_MS):
                return float(LATENCY_BUCKETS_MS[-1])
            low = LATENCY_BUCKETS_MS[i - 1] if i else 0.0
            return low + (LATENCY_BUCKETS_MS[i] - low) * (rank - seen) / count
        seen += count
    return float(LATENCY_BUCKETS_MS[-1])


def merge_buckets(a: Sequence[int], b: Sequence[int]) -> list[int]:
    """Element-wise sum of two histograms (the shorter padded with zeros)."""
    if len(a) < len(b):
        a, b = b, a
    return [x + (b[i] if i < len(b) else 0) for i, x in enumerate(a)]


def rows_per_s(rows: int, busy_s: float) -> float | None:
    """Rows per second of executor time (the sum of the shards' durations): what one slot
    achieves on this pipeline, comparable across pipelines whatever the scheduling."""
    return rows / busy_s if busy_s > 0 else None
