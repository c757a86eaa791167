"""`inferno results` without a server: its usage errors, experiment names, the leaderboard table,
and metric values read from the api's answers (old and new shapes)."""

from __future__ import annotations

import pytest

from inferno.client.arguments import UsageError, resolve_experiment
from inferno.client.cli import main
from inferno.client.tables import leaderboard_table, metric_value, pipelines_table

EXPERIMENTS = [
    {"experiment_id": "exp-1", "experiment_name": "arith"},
    {"experiment_id": "exp-2", "experiment_name": "arith-hard"},
    {"experiment_id": "exp-3", "experiment_name": "trivia"},
]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["results"], "give a PIPELINE, or --compare EXPERIMENT"),
        (["results", "3", "--compare", "exp-1"], "not both"),
        (["results", "3", "--metric", "numeric"], "--metric goes with --compare"),
    ],
)
def test_usage_errors(args, message, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--api", "http://127.0.0.1:9", *args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("token", "expected"),
    [("exp-2", "exp-2"), ("arith", "exp-1"), ("arith-", "exp-2"), ("tri", "exp-3")],
)
def test_resolve_experiment(token: str, expected: str) -> None:
    assert resolve_experiment(token, EXPERIMENTS) == expected


def test_resolve_experiment_errors() -> None:
    with pytest.raises(UsageError, match="'ari' matches 2 experiments"):
        resolve_experiment("ari", EXPERIMENTS)
    with pytest.raises(UsageError, match="no experiment id or name prefix matches 'x'"):
        resolve_experiment("x", EXPERIMENTS)


def test_leaderboard_table() -> None:
    def entry(rank, pid, name, value, low, high, count, status="ongoing", done=2):
        return {
            "rank": rank,
            "pipeline_id": pid,
            "pipeline_name": name,
            "status": status,
            "shards_completed": done,
            "num_shards": 8,
            "value": value,
            "lower_bound": low,
            "upper_bound": high,
            "confidence_level": 0.95,
            "ci_method": "wilson",
            "count": count,
        }

    board = {
        "experiment_id": "exp-1",
        "experiment_name": "arith",
        "metric": "exact_match",
        "pipelines": [
            entry(1, 3, "large", 0.9, 0.8123, 0.95, 24),
            entry(2, 1, "small", 0.5, 0.33, 0.67, 24, "stopped"),
            entry(3, 4, "new", None, None, None, 0, "new", 0),
        ],
    }
    assert leaderboard_table(board).splitlines() == [
        "experiment exp-1 (arith) by exact_match, 95% confidence intervals: wilson (fixed-sample)",
        "RANK  ID  NAME   STATUS   SHARDS  exact_match  INTERVAL        N   ERRORS",
        "   1   3  large  ongoing  2/8           0.900  [0.812, 0.950]  24  -",
        "   2   1  small  stopped  2/8           0.500  [0.330, 0.670]  24  -",
        "   3   4  new    new      0/8               -  -                0  -",
    ]


def test_metric_values_from_new_and_old_answers() -> None:
    new = {"metrics": {"exact_match": {"value": 0.75, "lower_bound": 0.5, "count": 4}}}
    old = {"metrics": {"exact_match": {"mean": 0.5, "count": 4}}}
    assert metric_value(new, "exact_match") == 0.75
    assert metric_value(old, "exact_match") == 0.5
    assert metric_value(new, "numeric") is None
    table = pipelines_table([{"pipeline_id": 1, "pipeline_name": "a", **new}])
    assert "0.750" in table
