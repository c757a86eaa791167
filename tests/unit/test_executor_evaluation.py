"""The eval path: prompt rendering, scorers and per-shard sufficient statistics."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferno.events.model import LATENCY_BUCKETS_MS, EvalSpec, Scorer
from inferno.executor.backends.base import Generation
from inferno.executor.evaluation import (
    SCORERS,
    EvalError,
    RowResult,
    check_eval,
    evaluate,
    exact_match,
    latency_bucket,
    merge_stats,
    reference,
    render,
    stats_of,
)

SPEC = EvalSpec(prompt="Q: {question}\nA:", scorers=[Scorer(name="exact_match", target="answer")])


def test_render_fills_row_fields():
    assert render("Q: {question} ({n:03d})", {"question": "2+2?", "n": 7}) == "Q: 2+2? (007)"
    assert render("{choices[1]}", {"choices": ["a", "b"]}) == "b"


def test_render_chat_messages_formats_each_content():
    template = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "{q}"}]
    assert render(template, {"q": "hi"}) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(
        st.one_of(
            st.sampled_from(["Q: ", "\n", "{{", "}}", " é ", "A:"]),
            st.sampled_from(["{q}", "{n}", "{flag}", "{none}", "{items}", "{obj}", "{n:>4}"]),
        ),
        max_size=8,
    ),
    q=st.text(max_size=20),
    n=st.one_of(st.integers(), st.floats(allow_nan=True)),
)
def test_plain_templates_render_as_the_formatter_does(pieces, q, n):
    """Templates of plain fields take a fast path; it must agree with `str.format_map`."""
    template = "".join(pieces)
    row = {"q": q, "n": n, "flag": True, "none": None, "items": [1, "a"], "obj": {"k": 1.5}}
    assert render(template, row) == template.format_map(row)


def test_a_missing_field_is_named():
    with pytest.raises(EvalError, match=r"needs field 'question'.*has: answer, id"):
        render("Q: {question}", {"id": 1, "answer": "4"})


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{}", "positional"),
        ("{0}", "positional"),
        ("{q.__class__}", "private"),
        ("{q", "prompt template"),
        ("{q.nope}", "prompt template"),
    ],
)
def test_bad_templates_raise_eval_errors(template, message):
    with pytest.raises(EvalError, match=message):
        render(template, {"q": "x"})


@pytest.mark.parametrize(
    "template",
    ["{q:>5000000}", "{q:>{width}}", "{n:.1001f}", "{q:{fill}^{width}}", "{q:>" + "9" * 5000 + "}"],
)
def test_render_refuses_huge_widths_and_precisions(template):
    """`{question:>5000000}` rendered a 5 MB prompt per row; a spec built from row fields is
    only known here, so the renderer checks the spec it is about to apply."""
    row = {"q": "x", "n": 1.0, "width": 5_000_000, "fill": "*"}
    with pytest.raises(EvalError, match="widths and precisions are at most 1000"):
        render(template, row)
    assert render("{q:*>{w}}|{n:.1000f}", {**row, "w": 1000})[:1001] == "*" * 999 + "x|"


@pytest.mark.parametrize(
    ("output", "expected", "options", "score"),
    [
        ("4", "4", {}, 1.0),
        ("  The  Answer\n", "the answer", {}, 1.0),
        ("  The  Answer\n", "the answer", {"normalize": False}, 0.0),
        ("The answer", "The answer", {"normalize": False}, 1.0),
        ("5", "4", {}, 0.0),
        ("4", 4, {}, 1.0),  # targets are compared as text
    ],
)
def test_exact_match(output, expected, options, score):
    scorer = Scorer(name="exact_match", target="answer", options=options)
    assert exact_match(output, {"answer": expected}, scorer) == score


def test_exact_match_names_a_missing_target():
    with pytest.raises(EvalError, match="target field 'answer'"):
        exact_match("4", {"question": "2+2?"}, Scorer(name="exact_match", target="answer"))


def test_scorers_is_a_registry_of_named_functions():
    assert SCORERS["exact_match"] is exact_match


@pytest.mark.parametrize(
    ("scorers", "message"),
    [
        ([Scorer(name="bleu", target="answer")], "unknown scorer 'bleu'"),
        ([Scorer(name="exact_match")], "needs a 'target'"),
        ([Scorer(name="regex")], "needs options.pattern"),
        ([Scorer(name="regex", options={"pattern": "("})], "pattern is invalid"),
        ([Scorer(name="contains", target="a", options={"case": True})], "unknown option 'case'"),
        ([Scorer(name="numeric", target="a", options={"tolerance": -1})], "a number >= 0"),
        ([Scorer(name="numeric", target="a", options={"pick": "middle"})], "'first' or 'last'"),
        ([Scorer(name="os:system")], "module 'os' is not in INFERNO_SCORER_MODULES"),
        ([Scorer(name="exact_match", target="a"), Scorer(name="exact_match", target="b")], "twice"),
    ],
)
def test_check_eval_rejects_specs_that_cannot_work(scorers, message):
    with pytest.raises(EvalError, match=message):
        check_eval(EvalSpec(scorers=scorers))


def test_reference_is_the_first_scorer_target():
    assert reference(SPEC, {"answer": 4}) == "4"
    assert reference(EvalSpec(), {"answer": 4}) is None


def test_evaluate_scores_a_row_and_skips_scoring_failed_generations():
    row = {"id": "r1", "question": "2+2?", "answer": "4"}
    gen = Generation(text="4", prompt_tokens=3, completion_tokens=1, latency_ms=2, simulated=True)
    result = evaluate(SPEC, 10, row, "Q: 2+2?\nA:", gen)
    assert result.scores == {"exact_match": 1.0}
    assert (result.row_index, result.row_id, result.simulated) == (10, "r1", True)
    failed = evaluate(SPEC, 11, row, "p", Generation(text="", error="rate limited"))
    assert failed.scores == {}
    assert failed.error == "rate limited"


def test_latency_buckets_use_inclusive_upper_bounds():
    assert latency_bucket(0) == 0
    assert latency_bucket(1) == 0
    assert latency_bucket(1.5) == 1
    assert latency_bucket(60_000) == len(LATENCY_BUCKETS_MS) - 1
    assert latency_bucket(60_001) == len(LATENCY_BUCKETS_MS)


def _results(n: int) -> list[RowResult]:
    return [
        RowResult(
            row_index=i,
            prompt="p",
            output="o",
            scores={} if i % 7 == 3 else {"exact_match": float(i % 3 == 0), "len": i * 0.5},
            prompt_tokens=i,
            completion_tokens=2 * i,
            latency_ms=(i * 37) % 5000,
            error="boom" if i % 7 == 3 else None,
        )
        for i in range(n)
    ]


def test_stats_of_counts_everything():
    stats = stats_of(_results(10), duration_s=1.5)
    assert stats.rows == 10
    assert stats.errors == 1
    assert stats.prompt_tokens == 45
    assert stats.completion_tokens == 90
    assert stats.duration_s == 1.5
    assert sum(stats.latency_ms_buckets) == 10
    assert len(stats.latency_ms_buckets) == len(LATENCY_BUCKETS_MS) + 1
    em = stats.metrics["exact_match"]
    assert (em.count, em.total, em.minimum, em.maximum) == (
        9,
        3.0,
        0.0,
        1.0,
    )  # rows 0, 6, 9 (3 errored)


@pytest.mark.parametrize("cut", [0, 1, 16, 50, 99, 100])
def test_merged_stats_equal_the_stats_of_all_rows(cut):
    rows = _results(100)
    merged = merge_stats(stats_of(rows[:cut], 1.0), stats_of(rows[cut:], 2.0))
    whole = stats_of(rows, 3.0)
    assert merged.metrics["len"].total == pytest.approx(whole.metrics["len"].total)
    assert merged.metrics["len"].total_sq == pytest.approx(whole.metrics["len"].total_sq)
    merged.metrics["len"] = whole.metrics["len"]  # float sums: equal up to rounding only
    assert merged == whole


def test_stats_of_no_rows_has_no_metrics():
    stats = stats_of([])
    assert stats.rows == 0
    assert stats.metrics == {}
    assert math.fsum(stats.latency_ms_buckets) == 0
