"""What a run may spend, and what each shard is held to (docs/evaluation.md, "Budgets").

A budget caps the tokens and/or dollars of an experiment (all its pipelines together) or of one
pipeline. Reserve and settle, like the fleet's rate limiter: before a shard is assigned, its
worst case is reserved (its rows' share of the experiment's estimated prompt tokens, plus the
completion bound per row, priced with the pipeline's prices), and when it completes the
reservation becomes what its executor reported. A shard is assigned only if the spend so far,
the reservations of the shards in flight and its own reservation fit every budget over it, so
a run passes its budget only by what completed shards used beyond their reservation (prompts
longer than estimated). Once a pipeline's next shard would not fit even beside the spend alone,
no settling can make room: the decider stops it (`BudgetExhausted`) with the numbers, and a
raised budget (`SetBudget`) lets it run again.

What an attempt that errored used is not reported, so it is not counted.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, TypeGuard

from inferno.events.backend_options import DEFAULT_MAX_TOKENS, SIM_MODEL_DEFAULTS
from inferno.events.model import Budget, PipelineSpec, shard_bounds


class Spend(NamedTuple):
    tokens: int = 0
    usd: float = 0.0

    def plus(self, other: Spend) -> Spend:
        return Spend(self.tokens + other.tokens, self.usd + other.usd)


def estimated_cost(
    prompt_tokens: int, completion_tokens: int, prices: dict[str, Any]
) -> float | None:
    """Tokens times the prices per 1,000 tokens in `prices` (a pipeline's client_config keys
    `price_per_1k_prompt_tokens`, `price_per_1k_completion_tokens`; a missing one counts 0).
    None when neither is set."""
    prompt_price = prices.get("price_per_1k_prompt_tokens")
    completion_price = prices.get("price_per_1k_completion_tokens")
    if not _price(prompt_price) and not _price(completion_price):
        return None
    return (
        prompt_tokens * (prompt_price if _price(prompt_price) else 0.0)
        + completion_tokens * (completion_price if _price(completion_price) else 0.0)
    ) / 1000


def _price(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def priced(spec: PipelineSpec) -> bool:
    return estimated_cost(0, 0, spec.client_config) is not None


def completion_bound(spec: PipelineSpec) -> int:
    """The most tokens one row's completion may take: `max_tokens` (or
    `max_completion_tokens`), else what the backend generates by default."""
    sampling = spec.sampling_params
    limit = sampling.get("max_tokens", sampling.get("max_completion_tokens"))
    bound = limit if isinstance(limit, int) and limit >= 0 else None
    if spec.pipeline_type == "sim":
        per_row = spec.model_config.get("tokens_per_row", SIM_MODEL_DEFAULTS["tokens_per_row"])
        return min(per_row, bound) if bound is not None else per_row
    return DEFAULT_MAX_TOKENS if bound is None else bound


def spent(spec: PipelineSpec, prompt_tokens: int, completion_tokens: int) -> Spend:
    """What these tokens cost the pipeline: its prices are fixed, so a sum of tokens is
    priced once rather than shard by shard."""
    cost = estimated_cost(prompt_tokens, completion_tokens, spec.client_config)
    return Spend(prompt_tokens + completion_tokens, cost or 0.0)


def reservation(
    spec: PipelineSpec, row_count: int, num_shards: int, prompt_tokens: int, shard: int
) -> Spend:
    """A shard's worst case: its rows' share of the estimated prompt tokens (`prompt_tokens`
    over all `row_count` rows), and every row's completion at its bound."""
    start, end = shard_bounds(row_count, num_shards, shard)
    rows = end - start
    prompt = math.ceil(prompt_tokens * rows / row_count) if row_count else 0
    completion = rows * completion_bound(spec)
    return Spend(prompt + completion, estimated_cost(prompt, completion, spec.client_config) or 0.0)


def over(budget: Budget, committed: Spend, more: Spend, scope: str) -> str | None:
    """Why `more` on top of `committed` does not fit `budget`; None when it does."""
    if budget.tokens is not None and committed.tokens + more.tokens > budget.tokens:
        return (
            f"{scope} budget: {committed.tokens:,} of {budget.tokens:,} tokens used,"
            f" and the next shard may take {more.tokens:,}"
        )
    if budget.usd is not None and committed.usd + more.usd > budget.usd + 1e-9:
        return (
            f"{scope} budget: ${committed.usd:,.4f} of ${budget.usd:,.2f} used,"
            f" and the next shard may cost ${more.usd:,.4f}"
        )
    return None
