"""Built-in scorers and their normalisation, user scorers and the allow-list."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from inferno.events.model import EvalSpec, Scorer
from inferno.events.scorers import BUILTIN_SCORERS, ScorerError, check_scorer, text_options
from inferno.executor.backends.base import Generation
from inferno.executor.evaluation import (
    SCORERS,
    EvalError,
    check_eval,
    contains,
    evaluate,
    exact_match,
    normalize,
    numeric,
    parse_number,
    reference,
    regex,
    resolve,
)


def scorer(name: str, target: str | None = "answer", **options: object) -> Scorer:
    return Scorer(name=name, target=target, options=options)


def test_the_registry_and_the_shared_names_agree():
    assert tuple(SCORERS) == BUILTIN_SCORERS
    for name in BUILTIN_SCORERS:
        assert resolve(name, ()) is SCORERS[name]


@pytest.mark.parametrize(
    ("options", "text", "expected"),
    [
        ({}, "  The  Cat\n", "the cat"),
        ({"normalize": False}, "  The  Cat\n", "  The  Cat\n"),
        ({"normalize": False, "ignore_case": True}, " A ", " a "),
        ({"strip_punctuation": True}, "Paris, France!", "paris france"),
        ({"strip_articles": True}, "The cat and a dog", "cat and dog"),
        ({"strip_articles": True}, "Theatre anthem", "theatre anthem"),  # whole words only
        ({"strip_punctuation": True, "strip_articles": True}, "“The” answer.", "answer"),
    ],
)
def test_normalisation_switches(options, text, expected):
    assert normalize(text, text_options(options)) == expected


@pytest.mark.parametrize(
    ("fn", "output", "target", "options", "score"),
    [
        (exact_match, "Paris", "paris", {}, 1.0),
        (exact_match, "Paris.", "paris", {}, 0.0),
        (exact_match, "Paris.", "paris", {"strip_punctuation": True}, 1.0),
        (exact_match, "the Eiffel Tower", "Eiffel tower", {"strip_articles": True}, 1.0),
        (exact_match, "NYC", ["New York", "nyc"], {}, 1.0),  # a list target: any of them
        (exact_match, "Paris", "paris", {"ignore_case": False}, 0.0),
        (contains, "The answer is Paris.", "paris", {}, 1.0),
        (contains, "The answer is Paris.", "Lyon", {}, 0.0),
        (contains, "answer:\n  New   York", "new york", {}, 1.0),
        (contains, "answer: New York", "new york", {"normalize": False}, 0.0),
        (contains, "it is Rome", ["Paris", "Rome"], {}, 1.0),
    ],
)
def test_text_scorers(fn, output, target, options, score):
    assert fn(output, {"answer": target}, scorer(fn.__name__, **options)) == score


@pytest.mark.parametrize(
    ("output", "options", "score"),
    [
        ("Answer: B", {"pattern": r"\bB\b"}, 1.0),
        ("Answer: b", {"pattern": r"\bB\b"}, 0.0),  # regex: case matters unless asked
        ("Answer: b", {"pattern": r"\bB\b", "ignore_case": True}, 1.0),
        ("Answer: B", {"pattern": r"B", "match": "full"}, 0.0),
        ("B", {"pattern": r"B", "match": "full"}, 1.0),
        (" B \n", {"pattern": r"B", "match": "full", "normalize_whitespace": True}, 1.0),
        ("B.", {"pattern": r"B", "match": "full", "strip_punctuation": True}, 1.0),
    ],
)
def test_regex(output, options, score):
    assert regex(output, {}, scorer("regex", target=None, **options)) == score


@pytest.mark.parametrize(
    ("text", "pick", "number"),
    [
        ("42", "first", 42.0),
        ("x = -3.5, then 7", "first", -3.5),
        ("x = -3.5, then 7", "last", 7.0),
        ("about 1,234,567.25 people", "first", 1234567.25),
        ("3e8 m/s", "first", 3e8),
        ("costs .5 dollars", "first", 0.5),
        ("#### 18", "last", 18.0),
        ("no digits here", "first", None),
    ],
)
def test_parse_number(text, pick, number):
    assert parse_number(text, pick) == number


@pytest.mark.parametrize(
    ("output", "target", "options", "score"),
    [
        ("The answer is 42.", "42", {}, 1.0),
        ("42.0", "42", {}, 1.0),
        ("41.9", "42", {}, 0.0),
        ("41.9", "42", {"tolerance": 0.1}, 1.0),
        ("41.5", "42", {"tolerance": 0.1}, 0.0),
        ("990", "1000", {"tolerance": 0.01, "relative": True}, 1.0),
        ("989", "1000", {"tolerance": 0.01, "relative": True}, 0.0),
        ("first 3 then 18", "18", {}, 0.0),
        ("first 3 then 18", "18", {"pick": "last"}, 1.0),
        ("I don't know", "18", {}, 0.0),
        ("1,000", "1000", {}, 1.0),
        ("7", ["6", "7"], {}, 1.0),
    ],
)
def test_numeric(output, target, options, score):
    assert numeric(output, {"answer": target}, scorer("numeric", **options)) == score


def test_numeric_needs_a_number_in_the_target():
    with pytest.raises(EvalError, match="holds no number"):
        numeric("4", {"answer": "four"}, scorer("numeric"))


def test_reference_of_a_list_target_is_its_first_item():
    spec = EvalSpec(scorers=[scorer("exact_match")])
    assert reference(spec, {"answer": ["Paris", "paris"]}) == "Paris"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (scorer("bleu"), "unknown scorer 'bleu'"),
        (scorer("contains", target=None), "contains needs a 'target'"),
        (scorer("regex", pattern="x"), "not a target"),
        (scorer("exact_match", ignore_case="yes"), "'ignore_case' must be true or false"),
        (scorer("regex", target=None, pattern="a", match="all"), "'search' or 'full'"),
        (scorer("numeric", tolerance=True), "a number >= 0"),
        (Scorer(name="mymod:score"), "module 'mymod' is not in INFERNO_SCORER_MODULES"),
        (Scorer(name="my-mod:score"), "unknown scorer"),
        (Scorer(name="mymod:"), "unknown scorer"),
    ],
)
def test_check_scorer_names_what_is_wrong(bad, message):
    with pytest.raises(ScorerError, match=message):
        check_scorer(bad, ())


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"inferno_test_scorers_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            def length_ratio(output, row, scorer):
                return min(len(output) / max(len(row[scorer.target]), 1), 2.0)

            def starts_with(output, row, scorer):
                return output.startswith(scorer.options.get("prefix", ""))

            def broken(output, row, scorer):
                return "high"

            def raises(output, row, scorer):
                raise KeyError("nope")

            NOT_CALLABLE = 3
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_user_scorers_run_from_allowed_modules_only(user_module: str):
    name = f"{user_module}:length_ratio"
    spec = EvalSpec(scorers=[Scorer(name=name, target="answer"), scorer("exact_match")])
    with pytest.raises(EvalError, match=f"module '{user_module}' is not in"):
        check_eval(spec, ())
    with pytest.raises(EvalError, match="not in INFERNO_SCORER_MODULES"):
        check_eval(spec, (f"{user_module}.sub", "other"))  # exact module names, not prefixes
    scorers = check_eval(spec, (user_module,))
    result = evaluate(spec, 0, {"answer": "abcd"}, "p", Generation(text="ab"), scorers)
    assert result.scores == {name: 0.5, "exact_match": 0.0}
    prefix = Scorer(name=f"{user_module}:starts_with", options={"prefix": "ab"})
    assert check_eval(EvalSpec(scorers=[prefix]), (user_module,))[prefix.name]("abc", {}, prefix)


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("missing", "has no function missing"),
        ("NOT_CALLABLE", "has no function NOT_CALLABLE"),
        ("broken", "returned 'high', not a finite number"),
        ("raises", "raised KeyError"),
    ],
)
def test_bad_user_scorers_are_eval_errors(user_module: str, function: str, message: str):
    spec = EvalSpec(scorers=[Scorer(name=f"{user_module}:{function}")])

    def run() -> None:
        scorers = check_eval(spec, (user_module,))
        evaluate(spec, 0, {}, "p", Generation(text="x"), scorers)

    with pytest.raises(EvalError, match=message):
        run()


def test_an_allowed_module_that_does_not_import_is_an_eval_error():
    spec = EvalSpec(scorers=[Scorer(name="no_such_module_xyz:f")])
    with pytest.raises(EvalError, match="cannot import no_such_module_xyz"):
        check_eval(spec, ("no_such_module_xyz",))
