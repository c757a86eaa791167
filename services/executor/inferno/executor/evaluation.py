"""The eval path every backend shares (DESIGN §6): render a prompt, score an output, sum stats.

Pure (no I/O, no clock), except that `resolve` imports an allowed user scorer's module. Per
shard the executor reports sufficient statistics (`ShardStats`) that merge exactly, so a
pipeline's metrics do not depend on how rows were cut into shards or batches.

Scorers: the built-ins in `SCORERS` (exact_match, contains, regex, numeric; options and their
checks in `inferno.events.scorers`, docs/evaluation.md), and user scorers `module:function`,
imported only from modules in the executor's allow-list (INFERNO_SCORER_MODULES). A metric is
named after its scorer, so two scorers with the same name in one eval spec are an error.

Latency histogram: `ShardStats.latency_ms_buckets` counts rows per bucket of
`inferno.events.model.LATENCY_BUCKETS_MS` (1, 2, 5, 10, 20, 50, 100, 200, 500 ms, 1, 2, 5, 10,
30, 60 s, each an inclusive upper bound), plus one last bucket for anything slower.
"""

from __future__ import annotations

import bisect
import functools
import importlib
import math
import re
import string
import unicodedata
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

import msgspec

from inferno.datasets.store import Row
from inferno.events.model import (
    LATENCY_BUCKETS_MS,
    EvalSpec,
    MetricStats,
    Scorer,
    ShardStats,
    merge_metrics,
)
from inferno.events.scorers import ScorerError, check_scorer, text_options, user_scorer
from inferno.events.templates import check_format_spec
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

    def format_field(self, value: Any, format_spec: str) -> Any:
        """The spec as resolved for this row (`{q:>{width}}` too), within MAX_FORMAT_WIDTH."""
        try:
            check_format_spec(format_spec)
        except ValueError as error:
            raise EvalError(f"prompt template: {error}") from None
        return super().format_field(value, format_spec)


_formatter = _RowFormatter()
Plan = tuple[tuple[str, str | None], ...]


@functools.lru_cache(maxsize=256)
def _plain(template: str) -> Plan | None:
    """The template as (literal, field) pairs when every field is a plain name with no format
    spec or conversion (most prompts), which then render without the Formatter's per-field
    calls; None when one needs it (or the template is malformed: it says why)."""
    try:
        parsed = list(_formatter.parse(template))
    except ValueError:
        return None
    if any(f is not None and (spec or conv or not f.isidentifier()) for _, f, spec, conv in parsed):
        return None
    return tuple((literal, field) for literal, field, _, _ in parsed)


def _format(template: str, row: Row) -> str:
    if (plan := _plain(template)) is not None:
        parts = []
        for literal, field in plan:
            parts.append(literal)
            if field is not None:
                value = row[field] if field in row else _formatter.get_value(field, (), row)
                parts.append(format(value, ""))
        return "".join(parts)
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
"""A scorer: (output, row, scorer) -> score. Built-ins return 0.0 or 1.0."""

_ARTICLES = re.compile(r"\b(?:a|an|the)\b", re.IGNORECASE)
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")


def normalize(text: str, switches: Mapping[str, bool]) -> str:
    """Apply the normalisation switches of `inferno.events.scorers.text_options`, in the order
    SQuAD's answer normalisation uses: punctuation, articles, case, whitespace."""
    if switches["strip_punctuation"]:
        text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))
    if switches["strip_articles"]:
        text = _ARTICLES.sub(" ", text)
    if switches["ignore_case"]:
        text = text.casefold()
    if switches["normalize_whitespace"]:
        text = " ".join(text.split())
    return text


def _targets(row: Row, scorer: Scorer) -> list[str]:
    """The row's target as text; a list target gives several (any of them may match)."""
    if scorer.target not in row:
        raise EvalError(f"scorer {scorer.name}: target field {scorer.target!r} is not in the row")
    value = row[scorer.target]
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


_switches: dict[int, tuple[Mapping[str, Any], dict[str, bool]]] = {}


def _text_switches(options: Mapping[str, Any]) -> dict[str, bool]:
    """`text_options`, once per options object rather than once per row: keyed by identity,
    which the cached entry's reference to the object keeps unique."""
    cached = _switches.get(id(options))
    if cached is not None and cached[0] is options:
        return cached[1]
    if len(_switches) >= 256:
        _switches.clear()
    switches = text_options(options)
    _switches[id(options)] = (options, switches)
    return switches


# exact_match and contains run once per row and metric: loops, not any() over a generator,
# which took half of their time


def exact_match(output: str, row: Row, scorer: Scorer) -> float:
    """1.0 when the normalised output equals the normalised target (or one of a list)."""
    switches = _text_switches(scorer.options)
    got = normalize(output, switches)
    for target in _targets(row, scorer):
        if got == normalize(target, switches):
            return 1.0
    return 0.0


def contains(output: str, row: Row, scorer: Scorer) -> float:
    """1.0 when the normalised target (or one of a list) occurs in the normalised output."""
    switches = _text_switches(scorer.options)
    got = normalize(output, switches)
    for target in _targets(row, scorer):
        if normalize(target, switches) in got:
            return 1.0
    return 0.0


def regex(output: str, row: Row, scorer: Scorer) -> float:
    """1.0 when options.pattern matches the output: anywhere (`match: search`, the default) or
    the whole of it (`match: full`). Normalisation is off unless asked for; `ignore_case`
    sets re.IGNORECASE instead of changing the text."""
    switches = text_options(scorer.options, defaults=False)
    flags = re.IGNORECASE if switches["ignore_case"] else 0
    text = normalize(output, {**switches, "ignore_case": False})
    pattern = re.compile(scorer.options["pattern"], flags)  # re caches compiled patterns
    found = (
        pattern.fullmatch(text) if scorer.options.get("match") == "full" else pattern.search(text)
    )
    return float(found is not None)


def parse_number(text: str, pick: str = "first") -> float | None:
    """The first (or last) number in `text`: `-1,234.5`, `3e8`, `.5`; None when there is none."""
    found = _NUMBER.findall(text)
    if not found:
        return None
    return float(found[0 if pick == "first" else -1].replace(",", ""))


def numeric(output: str, row: Row, scorer: Scorer) -> float:
    """1.0 when the number in the output is within `tolerance` (default 0) of the target's:
    absolute, or relative to the target with `relative: true`. `pick: last` reads the last
    number of the output (a chain of thought ends with its answer). No number: 0.0."""
    options = scorer.options
    got = parse_number(output, options.get("pick", "first"))
    if got is None:
        return 0.0
    tolerance = float(options.get("tolerance", 0.0))
    for target in _targets(row, scorer):
        expected = parse_number(target)
        if expected is None:
            raise EvalError(f"scorer numeric: target {target!r} holds no number")
        allowed = tolerance * abs(expected) if options.get("relative") else tolerance
        # plus rounding: 42 - 41.9 is 0.10000000000000142 in binary floating point
        if abs(got - expected) <= allowed + 1e-9 * max(abs(expected), 1.0):
            return 1.0
    return 0.0


SCORERS: dict[str, ScorerFn] = {
    "exact_match": exact_match,
    "contains": contains,
    "regex": regex,
    "numeric": numeric,
}  # the names are `inferno.events.scorers.BUILTIN_SCORERS`, which the api checks against


def resolve(name: str, allowed_modules: Collection[str]) -> ScorerFn:
    """A built-in by name, or the function a `module:function` names when `module` is in the
    allow-list. Importing runs the module's code: that is why it must be allowed here."""
    if name in SCORERS:
        return SCORERS[name]
    try:
        check_scorer(Scorer(name=name), allowed_modules)  # a module:function, and allowed
    except ScorerError as error:
        raise EvalError(str(error)) from None
    module_name, function_name = user_scorer(name) or ("", "")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise EvalError(f"scorer {name!r}: cannot import {module_name}: {error}") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise EvalError(f"scorer {name!r}: {module_name} has no function {function_name}")
    return _checked(name, function)


def _checked(name: str, function: Callable[..., Any]) -> ScorerFn:
    """A user scorer's result must be a finite number (a bool counts as 0/1); anything else,
    or an exception, is an `EvalError` naming the scorer: it would fail on a retry too."""

    def run(output: str, row: Row, scorer: Scorer) -> float:
        try:
            value = function(output, row, scorer)
        except Exception as error:
            raise EvalError(f"scorer {name!r} raised {error!r}") from error
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise EvalError(f"scorer {name!r} returned {value!r}, not a finite number")
        return float(value)

    return run


def check_eval(spec: EvalSpec, allowed_modules: Collection[str] = ()) -> dict[str, ScorerFn]:
    """Reject what would fail on every row, before any row runs; the spec's scorers by name."""
    resolved: dict[str, ScorerFn] = {}
    for scorer in spec.scorers:
        try:
            check_scorer(scorer, allowed_modules)
        except ScorerError as error:
            raise EvalError(str(error)) from None
        if scorer.name in resolved:
            raise EvalError(f"scorer {scorer.name} appears twice; metrics are named by scorer")
        resolved[scorer.name] = resolve(scorer.name, allowed_modules)
    return resolved


def reference(spec: EvalSpec, row: Row) -> str | None:
    """The answer the row expects: the first scorer target's value (what the simulator needs)."""
    for scorer in spec.scorers:
        if scorer.target and scorer.target in row:
            value = row[scorer.target]
            if isinstance(value, list):
                return str(value[0]) if value else None
            return str(value)
    return None


def score(
    spec: EvalSpec, output: str, row: Row, scorers: Mapping[str, ScorerFn] | None = None
) -> dict[str, float]:
    """Every metric of one row; `scorers` from `check_eval` (default: the built-ins)."""
    table = SCORERS if scorers is None else scorers
    return {s.name: table[s.name](output, row, s) for s in spec.scorers}


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
    spec: EvalSpec,
    row_index: int,
    row: Row,
    prompt: Prompt,
    gen: Generation,
    scorers: Mapping[str, ScorerFn] | None = None,
) -> RowResult:
    """Score one generation; a row the engine failed on gets no scores (it counts in `errors`)."""
    return RowResult(
        row_index=row_index,
        row_id=row.get("id"),
        prompt=prompt,
        output=gen.text,
        scores={} if gen.error is not None else score(spec, gen.text, row, scorers),
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
