"""Confidence sequences for a dataset's mean score: intervals valid at every look.

A fixed-sample interval (Wilson, normal) holds at one pre-chosen sample size; checked after every
shard, a 95 % Wilson interval misses the final value at some look in ~35 % of runs
(docs/evaluation.md). A confidence sequence holds at all looks at once: with probability ≥ 1 − α
the final value is inside every interval ever shown, so a live view can be watched and acted on.

Construction: the empirical-Bernstein confidence sequence for sampling without replacement of
Waudby-Smith & Ramdas ("Confidence sequences for sampling without replacement", NeurIPS 2020),
for scores in [0, 1]. The N rows are revealed in the order of a uniformly random permutation
(`inferno.events.rows`). With S_{i−1} the sum of the first i − 1 rows, μ_i = (Nμ − S_{i−1}) /
(N − i + 1) is the mean of the rows not yet seen, so E[X_i | past] = μ_i, and for a predictable
λ_i ∈ [0, 1) and predictable m_{i−1} ∈ [0, 1] (Fan et al.'s inequality, as the paper uses it)

    exp(±Σ λ_i (X_i − μ_i) − Σ (X_i − m_{i−1})² (−log(1 − λ_i) − λ_i))

is a nonnegative supermartingale at the true μ. Ville's inequality on each side at α/2, solved for
μ, gives at every t at once

    μ ≥ (A_t − B_t) / D_t,   A_t = Σ λ_i (X_i + S_{i−1} / (N − i + 1)),
    D_t = Σ λ_i N / (N − i + 1),   B_t = log(2/α) + Σ (X_i − m_{i−1})² (−log(1 − λ_i) − λ_i),

and μ ≤ (A_t + B_t) / D_t from the other side. The penalty follows the scores' spread, so a
metric near 0 or 1 gets a much narrower interval than Hoeffding's, and the weights N / (N − i + 1)
grow as the rows run out. λ_i = min(1/2, sqrt(2 log(2/α) / (v_{i−1} i log(i + 1)))), the paper's
predictable plug-in, with m and v the running mean and variance of the shard's rows before row i
(from priors 1/2 and 1/4): only rows before i in position order may be used, and those of the
same shard are the ones an executor has.

Shards: positions are cut into shards in order, so a shard's part of A is its own rows' terms plus
S_before · Σ λ_i / (N − i + 1), with S_before the sum of every row before it. An executor reports
its shard's terms (`shard_terms`); `Prefix` folds them in position order, holding a shard that
completes before an earlier one until the gap closes, so the sequence covers the longest completed
prefix of positions (the point estimate uses every completed shard).

A row the engine failed on has no score. The lower side counts it 0 and the upper side 1, so the
interval covers the mean over the scored rows whatever the failed rows would have scored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import msgspec

from inferno.events.model import SequenceTerms, SideTerms

CAP = 0.5  # λ's ceiling: the paper's c


def _side(
    values: Sequence[float | None], missing: float, start: int, population: int, log_term: float
) -> SideTerms:
    total = weight = scale = penalty = prefix = 0.0
    mean, spread = 0.5, 0.25  # priors for the running mean and variance (m_0, v_0)
    for j, value in enumerate(values):
        x = missing if value is None else value
        i = start + j + 1
        lam = min(CAP, math.sqrt(2 * log_term / (spread * i * math.log(i + 1))))
        per_remaining = lam / (population - i + 1)
        total += lam * x + per_remaining * prefix
        weight += per_remaining
        scale += per_remaining * population
        penalty += (x - mean) ** 2 * (-math.log1p(-lam) - lam)
        prefix += x
        mean = (0.5 + prefix) / (j + 2)
        spread += ((x - mean) ** 2 - spread) / (j + 2)
    return SideTerms(total, weight, scale, penalty, prefix)


def shard_terms(
    scores: Mapping[str, Sequence[float | None]], start: int, population: int, confidence: float
) -> SequenceTerms:
    """A shard's part of each metric's sequence: `scores[metric]` for its positions from
    `start`, in position order, None for a row without a score."""
    log_term = math.log(2 / (1 - confidence))
    rows = {len(values) for values in scores.values()}
    if len(rows) > 1:
        raise ValueError(f"every metric needs a score or None for each row, not {sorted(rows)}")
    low, high = {}, {}
    for metric, values in scores.items():
        low[metric] = _side(values, 0.0, start, population, log_term)
        # the sides differ only in what a missing score counts as
        missing = None in values
        high[metric] = _side(values, 1.0, start, population, log_term) if missing else low[metric]
    return SequenceTerms(start=start, rows=rows.pop() if rows else 0, low=low, high=high)


class _Sums(msgspec.Struct, array_like=True, gc=False):
    total: float = 0.0
    scale: float = 0.0
    penalty: float = 0.0
    sum: float = 0.0

    def extend(self, terms: SideTerms) -> None:
        self.total += terms.total + self.sum * terms.weight
        self.scale += terms.scale
        self.penalty += terms.penalty
        self.sum += terms.sum


class Prefix(msgspec.Struct, kw_only=True):
    """The sequences' sums over the longest completed prefix of positions."""

    rows: int = 0  # positions [0, rows) are in
    low: dict[str, _Sums] = msgspec.field(default_factory=dict)
    high: dict[str, _Sums] = msgspec.field(default_factory=dict)
    waiting: dict[int, SequenceTerms] = msgspec.field(default_factory=dict)  # by start position

    def absorb(self, terms: SequenceTerms) -> None:
        """Fold one completed shard's terms."""
        self.waiting[terms.start] = terms
        while (ready := self.waiting.pop(self.rows, None)) is not None:
            for sides, found in ((self.low, ready.low), (self.high, ready.high)):
                for name, side in found.items():
                    sides.setdefault(name, _Sums()).extend(side)
            self.rows += ready.rows

    def plus(self, terms: SequenceTerms) -> Prefix:
        """A copy with one more shard folded in (this one unchanged)."""
        copy = Prefix(
            rows=self.rows,
            low={name: msgspec.structs.replace(sums) for name, sums in self.low.items()},
            high={name: msgspec.structs.replace(sums) for name, sums in self.high.items()},
            waiting=dict(self.waiting),
        )
        copy.absorb(terms)
        return copy

    def tracks(self, metric: str) -> bool:
        return metric in self.low or any(metric in t.low for t in self.waiting.values())

    def bounds(self, metric: str, confidence: float, population: int) -> tuple[float, float] | None:
        """The sequence's interval for the metric's mean over the dataset's `population` rows;
        None before any row of the prefix (or for a metric it does not track). Once every row
        is in, the mean is known: exactly, or between failed rows counted 0 and counted 1."""
        low, high = self.low.get(metric), self.high.get(metric)
        if self.rows == 0 or low is None or high is None:
            return None
        if self.rows >= population:
            scored = population - round(high.sum - low.sum)
            if scored == population or scored == 0:
                return low.sum / population, high.sum / population
            return low.sum / scored, low.sum / scored  # the mean over the scored rows
        log_term = math.log(2 / (1 - confidence))
        lower = (low.total - log_term - low.penalty) / low.scale
        upper = (high.total + log_term + high.penalty) / high.scale
        return max(lower, 0.0), min(upper, 1.0)


class Strata(NamedTuple):
    """Sequences over several sets of rows (an experiment's own and each extension's), each a
    random order of its own set: the mean over all rows is between the row-weighted sums of the
    sets' bounds, each at confidence 1 − α/k, so that all k hold together (a union bound). A
    set none of whose rows is in yet is anywhere in [0, 1]."""

    parts: tuple[tuple[Prefix | None, int], ...]  # (a set's sequence, its rows)

    @property
    def rows(self) -> int:
        return sum(prefix.rows for prefix, _ in self.parts if prefix is not None)

    def tracks(self, metric: str) -> bool:
        return any(prefix is not None and prefix.tracks(metric) for prefix, _ in self.parts)

    def bounds(self, metric: str, confidence: float, population: int) -> tuple[float, float] | None:
        """`population`: all the sets' rows together."""
        level = 1 - (1 - confidence) / len(self.parts)
        lower = upper = 0.0
        known = False
        for prefix, rows in self.parts:
            found = prefix.bounds(metric, level, rows) if prefix is not None else None
            known = known or found is not None
            low, high = found if found is not None else (0.0, 1.0)
            lower, upper = lower + rows * low, upper + rows * high
        return (lower / population, upper / population) if known else None


def over_segments(
    own: Prefix | None, added: Mapping[int, Prefix], rows: Sequence[int]
) -> Prefix | Strata | None:
    """The sequence for the mean over all of an experiment's rows, `rows` per segment: its own
    rows' (`own`) while it has no others, else `Strata` of each segment's."""
    if len(rows) == 1:
        return own
    others = tuple((added.get(k), n) for k, n in enumerate(rows[1:], 1))
    return Strata(((own, rows[0]), *others))
