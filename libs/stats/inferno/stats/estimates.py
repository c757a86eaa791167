"""What a run would cost, before it runs (`POST /api/v1/experiments?dry_run=true`).

Tokens are estimated the way the OpenAI backend's rate limiter reserves them: one token per four
characters of the prompt (no tokenizer is loaded in the api), where a row's prompt is the
template's own text plus the row's values of the fields it names. Completions are bounded by
`max_tokens` (or `max_completion_tokens`); a pipeline that sets neither is bounded by
`DEFAULT_MAX_TOKENS`, what the real backends generate by default, and a `sim` pipeline by its
`tokens_per_row`. Costs use the pipeline's `client_config` prices per 1,000 tokens
(`estimated_cost`); a pipeline without prices has no cost, and the total says which.
"""

from __future__ import annotations

import math
import string
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from inferno.events.backend_options import CHARS_PER_TOKEN
from inferno.events.budgets import completion_bound, estimated_cost
from inferno.events.model import Budget, PipelineSpec, Prompt


def prompt_parts(prompt: Prompt) -> tuple[int, list[str]]:
    """The template's literal characters, and the row fields it names (once per use)."""
    templates = [prompt] if isinstance(prompt, str) else [m.get("content", "") for m in prompt]
    literal, fields = 0, []
    for template in templates:
        for text, name, _, _ in string.Formatter().parse(template):
            literal += len(text)
            if name:
                fields.append(name.split(".", 1)[0].split("[", 1)[0])
    return literal, fields


def prompt_chars(prompt: Prompt, rows: Iterable[Mapping[str, Any]]) -> tuple[int, int]:
    """(rows, Σ prompt characters) over `rows`."""
    literal, fields = prompt_parts(prompt)
    count = total = 0
    for row in rows:
        count += 1
        total += literal + sum(len(str(row.get(field, ""))) for field in fields)
    return count, total


def prompt_tokens(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN)


def within(budget: Budget | None, tokens: int, cost: float | None) -> bool | None:
    """Whether a worst case of `tokens` and `cost` fits `budget` (None: no budget to fit)."""
    if budget is None:
        return None
    if budget.tokens is not None and tokens > budget.tokens:
        return False
    return budget.usd is None or (cost is not None and cost <= budget.usd)


def estimate(
    pipelines: list[PipelineSpec], rows: int, chars: int, budget: Budget | None = None
) -> dict[str, Any]:
    """Per pipeline and in all: prompt tokens, the completions' bound, and the worst-case cost;
    where a budget applies (the pipeline's, the experiment's `budget`), whether that fits it."""
    prompt = prompt_tokens(chars)
    out, worst, unpriced = [], 0.0, []
    for spec in pipelines:
        completion = completion_bound(spec) * rows
        cost = estimated_cost(prompt, completion, spec.client_config)
        if cost is None:
            unpriced.append(spec.pipeline_name)
        else:
            worst += cost
        out.append(
            {
                "pipeline_name": spec.pipeline_name,
                "pipeline_type": spec.pipeline_type,
                "prompt_tokens": prompt,
                "completion_tokens_max": completion,
                "tokens_max": prompt + completion,
                "cost_max": cost,
                "budget": msgspec.to_builtins(spec.budget),
                "within_budget": within(spec.budget, prompt + completion, cost),
            }
        )
    tokens = sum(p["tokens_max"] for p in out)
    cost_max = worst if len(unpriced) < len(out) else None
    return {
        "dry_run": True,
        "rows": rows,
        "pipelines": out,
        "total": {
            "tokens_max": tokens,
            "cost_max": cost_max,
            "unpriced": unpriced,
            "budget": msgspec.to_builtins(budget),
            "within_budget": within(budget, tokens, cost_max),
        },
        "method": f"prompt tokens ~ characters / {CHARS_PER_TOKEN}; completions at their bound",
    }
