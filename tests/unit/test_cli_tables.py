"""The plain-text tables of `ps`, `ops` and `executors`."""

from __future__ import annotations

from inferno.client.tables import (
    executors_table,
    format_table,
    in_order,
    leaderboard_table,
    operations_table,
    pipeline_waits,
    pipelines_table,
    settled,
)


def test_format_table_aligns_numbers_right_and_shows_missing_as_dash() -> None:
    table = format_table(["ID", "NAME", "SCORE"], [[1, "a", 0.5], [10, None, None], [2, "ccc", 1]])
    assert table.splitlines() == [
        "ID  NAME  SCORE",
        " 1  a     0.500",
        "10  -         -",
        " 2  ccc       1",
    ]


def pipeline(pid: int, name: str, status: str, done: int, value: float | None, **extra: object):
    interval = {"lower_bound": value, "upper_bound": value, "ci_method": "wilson"}
    metrics = {} if value is None else {"exact_match": {"value": value, "count": 8, **interval}}
    return {
        "pipeline_id": pid,
        "pipeline_name": name,
        "pipeline_type": "sim",
        "simulated": True,
        "experiment_id": "exp-1",
        "status": status,
        "shards_completed": done,
        "num_shards": 8,
        "rows_processed": done * 12,
        "in_flight": [],
        "parent_pipeline_id": None,
        "metrics": metrics,
        **extra,
    }


def test_pipelines_table() -> None:
    rows = [
        pipeline(
            3,
            "large-t07",
            "ongoing",
            1,
            0.9,
            parent_pipeline_id=2,
            in_flight=[{"shard": 1, "executor_id": "exec-1", "attempt": 1}],
        ),
        pipeline(1, "small", "stopped", 2, 0.5, row_errors=3),
        pipeline(2, "large", "completed", 8, 0.875),  # from an api without row_errors
    ]
    assert pipelines_table(rows).splitlines() == [
        "ID  NAME       TYPE  STATUS     SHARDS  RUNNING  ROWS  ERRORS  exact_match  PARENT",
        " 1  small      sim   stopped    2/8           0    24       3        0.500       -",
        " 2  large      sim   completed  8/8           0    96       -        0.875       -",
        " 3  large-t07  sim   ongoing    1/8           1    12       -        0.900       2",
    ]


def test_pipelines_table_names_experiments_when_there_are_several() -> None:
    rows = [pipeline(1, "a", "new", 0, None), pipeline(2, "a", "new", 0, None, experiment_id="e2")]
    lines = pipelines_table(rows).splitlines()
    assert lines[0].split() == [
        "ID",
        "NAME",
        "TYPE",
        "STATUS",
        "SHARDS",
        "RUNNING",
        "ROWS",
        "ERRORS",
        "PARENT",
        "EXPERIMENT",
    ]
    assert lines[2].split()[-1] == "e2"


def test_operations_table() -> None:
    ops = [
        {
            "ic_id": 5,
            "operation": "clone",
            "pipeline_id": 2,
            "status": "completed",
            "error": None,
            "created_at": 1000.0,
            "processed_at": 1000.0042,
            "result": {"pipeline_id": 4},
            "actor": "alice@laptop",
            "reason": "try a hotter sampler",
        },
        {
            "ic_id": 2,
            "operation": "resume",
            "pipeline_id": 1,
            "status": "failed",
            "error": "cannot resume pipeline 1: it is ongoing",
            "created_at": 1000.0,
            "processed_at": 1000.5,
            "result": {},
        },
        {
            "ic_id": 7,
            "operation": "stop",
            "pipeline_id": 3,
            "status": "pending",
            "error": None,
            "created_at": 0,
            "processed_at": None,
            "result": {},
        },
    ]
    lines = operations_table(in_order(ops)).splitlines()
    assert lines[0].split() == [
        "IC_ID",
        "OPERATION",
        "PIPELINE",
        "STATUS",
        "TOOK_MS",
        "CREATED",
        "ACTOR",
        "REASON",
        "RESULT",
    ]
    assert [line.split()[:5] for line in lines[1:]] == [
        ["2", "resume", "1", "failed", "500.000"],
        ["5", "clone", "2", "completed", "4.200"],
        ["7", "stop", "3", "pending", "-"],
    ]
    assert lines[1].endswith("error: cannot resume pipeline 1: it is ongoing")
    assert lines[2].endswith("alice@laptop  try a hotter sampler  pipeline_id=4")
    assert lines[3].split()[6:8] == ["-", "-"]  # no actor, no reason: an older api, or none given


EXEC_1_REST = ["sim,openai", "sim-a", "h", "11", "1.500"]


def test_executors_table() -> None:
    table = executors_table(
        [
            {
                "executor_id": "exec-2",
                "slots": 1,
                "busy": 0,
                "backends": ["sim"],
                "loaded_models": [],
                "hostname": "h",
                "pid": 12,
                "heartbeat_age_s": 0.25,
            },
            {
                "executor_id": "exec-1",
                "slots": 2,
                "busy": 1,
                "backends": ["sim", "openai"],
                "loaded_models": ["sim-a"],
                "hostname": "h",
                "pid": 11,
                "heartbeat_age_s": 1.5,
                "capacity": {"slots": 2, "gpus": 2, "gpu_mem_gb": 160},
                "used": {"slots": 1, "gpus": 1, "gpu_mem_gb": 40},
            },
        ]
    )
    assert [line.split() for line in table.splitlines()[1:]] == [
        ["exec-1", "2", "1", "gpu_mem_gb", "40/160", "gpus", "1/2", *EXEC_1_REST],
        ["exec-2", "1", "0", "-", "sim", "-", "h", "12", "0.250"],
    ]


def test_pipelines_that_cannot_be_placed_say_why_under_the_table() -> None:
    lines = pipeline_waits(
        [
            {"pipeline_id": 2, "pipeline_name": "ok", "unschedulable": None},
            {"pipeline_id": 1, "pipeline_name": "big", "unschedulable": "needs gpus 1; \x1b[2J"},
        ]
    )
    assert lines == ["pipeline 1 (big) cannot be placed: needs gpus 1; \\x1b[2J"]


def test_settled() -> None:
    assert settled({"status": "completed"})
    assert settled({"status": "stopped", "in_flight": []})
    assert not settled({"status": "stopped", "in_flight": [{"shard": 3}]})
    assert not settled({"status": "ongoing", "in_flight": []})


EVIL = "ok\x1b[2J\x1b[31mFAKE\x1b]0;pwned\x07\nline2"


def test_tables_escape_control_characters_in_every_cell() -> None:
    table = pipelines_table([pipeline(1, EVIL, "ongoing", 1, 0.5, experiment_id="exp-\x1b]0;x")])
    ops = operations_table(
        [
            {
                "ic_id": 1,
                "operation": "clone",
                "pipeline_id": 1,
                "status": "failed",
                "error": f"pipeline {EVIL!s} is \u202egnp.exe",
                "result": {},
            }
        ]
    )
    for text in (table, ops):
        assert not {"\x1b", "\x07", "\u202e"} & set(text)
    assert len(table.splitlines()) == 2  # the name's newline starts no line of its own
    assert "ok\\x1b[2J\\x1b[31mFAKE" in table
    assert ops.splitlines()[1].endswith("\\x1b]0;pwned\\x07\\nline2 is \\u202egnp.exe")


def test_tables_cap_column_widths() -> None:
    rows = [pipeline(i, "n" * 100_000, "ongoing", 0, None) for i in range(1, 1001)]
    table = pipelines_table(rows)
    lines = table.splitlines()
    assert len(lines) == 1001
    assert max(len(line) for line in lines) < 200
    assert lines[1].split()[1] == "n" * 39 + "…"
    board = leaderboard_table(
        {"experiment_id": "exp-1", "experiment_name": "e" * 100_000, "metric": "m", "pipelines": []}
    )
    assert len(board.splitlines()[0]) < 100
