"""Dry-run estimates: prompt characters from template and fields, completions at their bound."""

from __future__ import annotations

import pytest

from inferno.client.tables import estimate_table
from inferno.events.backend_options import DEFAULT_MAX_TOKENS
from inferno.events.budgets import completion_bound
from inferno.events.model import Budget, PipelineSpec
from inferno.stats.estimates import estimate, prompt_chars, prompt_parts

ROWS = [{"question": "2+2?", "answer": "4"}, {"question": "10+10?", "answer": "20"}]


def spec(kind: str = "openai", **parts: object) -> PipelineSpec:
    return PipelineSpec(pipeline_name=f"p-{kind}", pipeline_type=kind, **parts)  # type: ignore[arg-type]


def test_a_prompt_is_its_literal_text_plus_the_fields_it_names():
    assert prompt_parts("Q: {question}\nA:") == (6, ["question"])
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "{q[0]} {q.x}"}]
    assert prompt_parts(chat) == (10, ["q", "q"])
    assert prompt_chars("Q: {question}\nA:", ROWS) == (2, 6 + 4 + 6 + 6)


def test_completions_are_bounded_by_max_tokens_or_the_backends_default():
    assert completion_bound(spec(sampling_params={"max_tokens": 16})) == 16
    assert completion_bound(spec(sampling_params={"max_completion_tokens": 9})) == 9
    assert completion_bound(spec()) == DEFAULT_MAX_TOKENS
    assert completion_bound(spec("sim", model_config={"tokens_per_row": 6})) == 6
    assert completion_bound(spec("sim", sampling_params={"max_tokens": 3})) == 3
    assert completion_bound(spec("sim")) == 8


def test_cost_is_worst_case_where_priced_and_the_total_names_what_is_not():
    priced = PipelineSpec(
        pipeline_name="gpt",
        pipeline_type="openai",
        sampling_params={"max_tokens": 10},
        client_config={"price_per_1k_prompt_tokens": 1.0, "price_per_1k_completion_tokens": 2.0},
    )
    answer = estimate([priced, spec("sim")], rows=100, chars=4000)
    gpt, sim = answer["pipelines"]
    assert (gpt["prompt_tokens"], gpt["completion_tokens_max"], gpt["tokens_max"]) == (
        1000,
        1000,
        2000,
    )
    assert gpt["cost_max"] == pytest.approx(1.0 + 2.0)
    assert (sim["completion_tokens_max"], sim["cost_max"]) == (800, None)
    assert answer["total"] == {
        "tokens_max": 2000 + 1800,
        "cost_max": 3.0,
        "unpriced": ["p-sim"],
        "budget": None,
        "within_budget": None,
    }
    text = estimate_table(answer)
    assert text.splitlines()[0] == "dry run over 100 rows: nothing was created"
    assert "total: at most 3800 tokens, at most 3.0000 in cost (no prices for p-sim)" in text
    assert "budget" not in text


def test_a_dry_run_says_whether_the_worst_case_fits_each_budget():
    capped = PipelineSpec(
        pipeline_name="gpt",
        pipeline_type="openai",
        sampling_params={"max_tokens": 10},
        client_config={"price_per_1k_completion_tokens": 2.0},
        budget=Budget(tokens=1500),
    )
    answer = estimate([capped], rows=100, chars=4000, budget=Budget(usd=5.0))
    [gpt] = answer["pipelines"]
    assert (gpt["budget"], gpt["within_budget"]) == ({"tokens": 1500}, False)  # 2000 tokens
    assert (answer["total"]["budget"], answer["total"]["within_budget"]) == ({"usd": 5.0}, True)
    lines = estimate_table(answer).splitlines()
    assert lines[-2:] == [
        "budget $5.00: the worst case fits",
        "gpt's budget 1,500 tokens: the worst case is over it: the run stops before it passes it",
    ]
