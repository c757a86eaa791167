"""Prune policies as decisions: which pipelines of an experiment the rule stops now, and why.

Pure: `decide` calls `to_prune` after each completed shard with every pipeline's standing in the
policy's metric, and records a `PipelinePruned` with the reason for each pipeline it names.

- `dominated`: a pipeline is stopped once its upper bound is below the lower bound of the best
  pipeline (the highest lower bound). The bounds are confidence sequences
  (`inferno.events.sequences`), valid at every look, so checking after every shard keeps the
  error rate at the stated level: the truly best pipeline is stopped with probability at most
  about 1 − confidence_level (it must fall below another's lower bound, which holds the other's
  mean with that probability).
- `median_of_peers`: RapidFire's rule, for comparison: a pipeline is stopped once its value is
  below the median of the values of the other pipelines still running. No error control: the
  median of noisy estimates moves, and half of any field is below it.

Both wait until a pipeline has `min_rows` rows in its sequence, and never stop a pipeline twice:
one a person resumed after a prune is theirs (`exempt`).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import NamedTuple

from inferno.events.model import PrunePolicy


class Standing(NamedTuple):
    pipeline_id: int
    running: bool  # new or ongoing: the rule may stop it
    exempt: bool  # resumed after a prune: the rule leaves it alone
    rows: int  # rows in its confidence sequence (the longest completed prefix)
    value: float | None
    lower: float | None
    upper: float | None
    shards: str  # "12/50": completed of all, for the reason


def to_prune(policy: PrunePolicy, standings: Sequence[Standing]) -> list[tuple[int, str]]:
    """(pipeline_id, reason) for every pipeline the rule stops now."""
    ready = [s for s in standings if s.rows >= policy.min_rows]
    if policy.rule == "dominated":
        return _dominated(policy, ready)
    return _below_median(policy, ready)


def _dominated(policy: PrunePolicy, ready: Sequence[Standing]) -> list[tuple[int, str]]:
    bounded = [s for s in ready if s.lower is not None and s.upper is not None]
    if len(bounded) < 2:
        return []
    best = max(bounded, key=lambda s: (s.lower, -s.pipeline_id))
    assert best.lower is not None
    return [
        (
            s.pipeline_id,
            f"{policy.metric} upper {s.upper:.3f} < best lower {best.lower:.3f}"
            f" (pipeline {best.pipeline_id}) at {s.shards} shards, {s.rows} rows",
        )
        for s in bounded
        if s.running and not s.exempt and s is not best and s.upper is not None
        if s.upper < best.lower
    ]


def _below_median(policy: PrunePolicy, ready: Sequence[Standing]) -> list[tuple[int, str]]:
    valued = [s for s in ready if s.running and s.value is not None]
    out = []
    for s in valued:
        peers = [p.value for p in valued if p is not s and p.value is not None]
        if s.exempt or s.value is None or not peers:
            continue
        median = statistics.median(peers)
        if s.value < median:
            reason = (
                f"{policy.metric} {s.value:.3f} < peers' median {median:.3f}"
                f" ({len(peers)} peers) at {s.shards} shards, {s.rows} rows"
            )
            out.append((s.pipeline_id, reason))
    return out
