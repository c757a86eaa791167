"""The eval path every backend shares (DESIGN §6): render a prompt, score an output, sum stats.

Pure: no I/O and no clock. Per shard the executor reports sufficient statistics (`ShardStats`)
that merge exactly, so a pipeline's metrics do not depend on how rows were cut into shards or
batches.

Scorers are looked up by name in `SCORERS` (name -> function of output, row, spec); issue 4 adds
contains / regex / numeric there. A metric is named after its scorer, so two scorers with the
same name in one eval spec are an error.

Latency histogram: `ShardStats.latency_ms_buckets` counts rows per bucket of
`inferno.events.model.LATENCY_BUCKETS_MS` (1, 2, 5, 10, 20, 50, 100, 200, 500 ms, 1, 2, 5, 10,
30, 60 s, each an inclusive upper bound), plus one last bucket for anything slower.
"""

from __future__ import annotations

import bisect
import string
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import msgspec

from inferno.events.datasets import Row
from inferno.events.model import (
    LATENCY_BUCKETS_MS,
    EvalSpec,
    MetricStats,
    Scorer,
    ShardStats,
    merge_metrics,
)
from inferno.executor.backends.base import Generation, Prompt


class EvalError(ValueError):
    """The eval spec does not fit the data (a missing field, an unknown scorer): retrying the
    shard would fail the same way."""


# rendering


class _RowFormatter(string.Formatter):
    """`str.format_map` over a row, with errors that name the field. Attribute access to private
    names (`{x.__class__}`) is refused: a template comes from a request, not from code."""

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        if any(part.startswith("_") for part in field_name.split(".")[1:]):
            raise EvalError(f"prompt field {{{field_name}}}: private attributes are not allowed")
        return super().get_field(field_name, args, kwargs)

    def get_value(self, key: int | str, args: Any, kwargs: Mapping[str, Any]) -> Any:
        if isinstance(key, int):
            raise EvalError("prompt template: positional fields ({} or {0}) are not allowed")
        if key not in kwargs:
            fields = ", ".join(sorted(kwargs)) or "none"
            raise EvalError(f"prompt template needs field {key!r}, not in the row (has: {fields})")
        return kwargs[key]


_formatter = _RowFormatter()


def _format(template: str, row: Row) -> str:
    try:
        return _formatter.vformat(template, (), row)
    except EvalError:
        raise
    except (ValueError, IndexError, KeyError, AttributeError, TypeError) as error:
        raise EvalError(f"prompt template {template!r}: {error}") from None


def render(template: str | list[dict[str, str]], row: Row) -> Prompt:
    """The prompt for one row: a format string, or chat messages whose contents are ones."""
    if isinstance(template, str):
        return _format(template, row)
    return [{**message, "content": _format(message["content"], row)} for message in template]


# scoring

ScorerFn = Callable[[str, Row, Scorer], float]


def _normalize(text: str) -> str:
    return " ".join(text.split()).casefold()


def _target(row: Row, scorer: Scorer) -> str:
    if scorer.target not in row:
        raise EvalError(f"scorer {scorer.name}: target field {scorer.target!r} is not in the row")
    return str(row[scorer.target])


def exact_match(output: str, row: Row, scorer: Scorer) -> float:
    """1.0 when the output equals the row's target field; `normalize` (default true) ignores
    case and runs of whitespace."""
    expected = _target(row, scorer)
    if scorer.options.get("normalize", True):
        return float(_normalize(output) == _normalize(expected))
    return float(output == expected)


SCORERS: dict[str, ScorerFn] = {"exact_match": exact_match}
_NEEDS_TARGET = frozenset({"exact_match"})


def check_eval(spec: EvalSpec) -> None:
    """Reject what would fail on every row, before any row runs."""
    seen: set[str] = set()
    for scorer in spec.scorers:
        if scorer.name not in SCORERS:
            known = ", ".join(sorted(SCORERS))
            raise EvalError(f"unknown scorer {scorer.name!r} (known: {known})")
        if scorer.name in _NEEDS_TARGET and not scorer.target:
            raise EvalError(f"scorer {scorer.name} needs a target (the row field to compare with)")
        if scorer.name in seen:
            raise EvalError(f"scorer {scorer.name} appears twice; metrics are named by scorer")
        seen.add(scorer.name)


def reference(spec: EvalSpec, row: Row) -> str | None:
    """The answer the row expects: the first scorer target's value (what the simulator needs)."""
    for scorer in spec.scorers:
        if scorer.target and scorer.target in row:
            return str(row[scorer.target])
    return None


def score(spec: EvalSpec, output: str, row: Row) -> dict[str, float]:
    return {s.name: SCORERS[s.name](output, row, s) for s in spec.scorers}


# statistics


class RowResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One line of the shard's results JSONL in INFERNO_RESULTS."""

    row_index: int
    row_id: Any = None
    prompt: Prompt
    output: str
    scores: dict[str, float] = {}
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    simulated: bool = False
    error: str | None = None


def evaluate(
    spec: EvalSpec, row_index: int, row: Row, prompt: Prompt, gen: Generation
) -> RowResult:
    """Score one generation; a row the engine failed on gets no scores (it counts in `errors`)."""
    return RowResult(
        row_index=row_index,
        row_id=row.get("id"),
        prompt=prompt,
        output=gen.text,
        scores={} if gen.error is not None else score(spec, gen.text, row),
        prompt_tokens=gen.prompt_tokens,
        completion_tokens=gen.completion_tokens,
        latency_ms=gen.latency_ms,
        simulated=gen.simulated,
        error=gen.error,
    )


def latency_bucket(latency_ms: float) -> int:
    return bisect.bisect_left(LATENCY_BUCKETS_MS, latency_ms)


def stats_of(results: Iterable[RowResult], duration_s: float = 0.0) -> ShardStats:
    """Sufficient statistics of some rows (a batch or a whole shard)."""
    buckets = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    rows = prompt_tokens = completion_tokens = errors = 0
    metrics: dict[str, MetricStats] = {}
    for r in results:
        rows += 1
        prompt_tokens += r.prompt_tokens
        completion_tokens += r.completion_tokens
        buckets[latency_bucket(r.latency_ms)] += 1
        errors += r.error is not None
        for name, value in r.scores.items():
            metrics[name] = metrics.get(name, MetricStats()).merged(
                MetricStats(1, value, value * value, value, value)
            )
    return ShardStats(
        rows=rows,
        metrics=metrics,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        duration_s=duration_s,
        latency_ms_buckets=buckets,
        errors=errors,
    )


def merge_stats(a: ShardStats, b: ShardStats) -> ShardStats:
    """Exact: stats of A merged with stats of B equal the stats of A and B together."""
    width = max(len(a.latency_ms_buckets), len(b.latency_ms_buckets))
    pad_a = a.latency_ms_buckets + [0] * (width - len(a.latency_ms_buckets))
    pad_b = b.latency_ms_buckets + [0] * (width - len(b.latency_ms_buckets))
    return ShardStats(
        rows=a.rows + b.rows,
        metrics=merge_metrics(a.metrics, b.metrics),
        prompt_tokens=a.prompt_tokens + b.prompt_tokens,
        completion_tokens=a.completion_tokens + b.completion_tokens,
        duration_s=a.duration_s + b.duration_s,
        latency_ms_buckets=[x + y for x, y in zip(pad_a, pad_b, strict=True)],
        errors=a.errors + b.errors,
    )
