"""The pure parts of honest status (issue 7, items 6 and 7): when a shard's row errors make it a
failed shard, how the lease reads to the api, and how the CLI shows row errors, failures and an
operation no scheduler decides."""

from __future__ import annotations

from collections import Counter

from inferno.client.cli import undecided
from inferno.client.tables import leaderboard_table, pipeline_failures, pipelines_table
from inferno.events.leadership import Leadership, LeaseValue
from inferno.executor.shard import endpoint_failure

DOWN = "failed after 6 attempts: APIConnectionError: Connection error."


def test_a_shard_fails_only_when_every_row_failed_at_the_endpoint() -> None:
    assert endpoint_failure(Counter({DOWN: 3}), 3) == f"all 3 rows failed at the endpoint: {DOWN}"
    assert endpoint_failure(Counter({DOWN: 2}), 3) is None  # one row got an answer, or a 400
    assert endpoint_failure(Counter(), 0) is None  # an empty shard has nothing to fail
    mixed = endpoint_failure(Counter({DOWN: 2, "failed after 6 attempts: HTTP 503": 1}), 3)
    assert mixed == f"all 3 rows failed at the endpoint (1 with other errors): {DOWN}"


def test_leadership_says_who_holds_the_lease_and_since_when_nobody_does() -> None:
    leadership = Leadership()
    assert leadership.check(100.0, "X_LEADER") == (
        False,
        "no scheduler holds the lease in X_LEADER",
    )
    leadership.held(LeaseValue(scheduler_id="s1", since=90.0, term=4), at=99.0)
    assert leadership.check(100.0, "X_LEADER") == (
        True,
        "s1 holds the lease in X_LEADER (term 4, for 10 s)",
    )
    leadership.ended(at=101.0)  # expired or deleted
    assert leadership.check(115.2, "X_LEADER") == (
        False,
        "no scheduler holds the lease in X_LEADER (last leader s1, lapsed 14 s ago)",
    )
    leadership.ended(at=120.0)  # a marker after a delete: the lapse is still the first one
    assert "lapsed 19 s ago" in leadership.check(120.0, "X_LEADER")[1]


def pipeline(pid: int, **fields: object) -> dict[str, object]:
    return {
        "pipeline_id": pid,
        "pipeline_name": f"p{pid}",
        "pipeline_type": "openai",
        "status": "completed",
        "shards_completed": 2,
        "num_shards": 2,
        "in_flight": [],
        "rows_processed": 6,
        "row_errors": 0,
        **fields,
    }


def test_ps_shows_row_errors_and_why_pipelines_failed() -> None:
    pipelines = [
        pipeline(1, row_errors=2),
        pipeline(2, status="failed", error="shard 0 failed: all 3 rows failed\x1b[2J"),
    ]
    header, first, _ = pipelines_table(pipelines).splitlines()
    assert header.split()[7] == "ERRORS"
    assert first.split()[7] == "2"
    assert pipeline_failures(pipelines) == [
        "pipeline 2 (p2) failed: shard 0 failed: all 3 rows failed\\x1b[2J"
    ]


def test_the_leaderboard_counts_row_errors() -> None:
    entry = {"rank": 1, "pipeline_id": 1, "pipeline_name": "p1", "status": "completed"}
    board = {"metric": "exact_match", "pipelines": [{**entry, "count": 4, "row_errors": 2}]}
    _, header, row = leaderboard_table(board).splitlines()
    assert header.split()[-1] == "ERRORS"
    assert row.split()[-1] == "2"


def test_an_undecided_operation_says_whether_a_scheduler_leads() -> None:
    op = {"ic_id": 12, "status": "pending"}
    lapsed = "no scheduler holds the lease in INFERNO_LEADER (last leader s1, lapsed 14 s ago)"
    assert undecided(op, lapsed) == f"ic_id 12 is pending: {lapsed} — is the scheduler running?"
    assert undecided(op, None).startswith("ic_id 12 is pending after the wait, though")
