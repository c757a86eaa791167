"""The live views (`inferno.client.live`): the api's dicts in, a rich table or plain lines out."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from inferno.client import live, watching

EVIL = "ok\x1b[2J[red]FAKE[/red]\u202e\nline2"


def pipeline(pid: int, **over: Any) -> dict[str, Any]:
    base = {
        "pipeline_id": pid,
        "pipeline_name": f"p{pid}",
        "experiment_id": "exp-1",
        "status": "ongoing",
        "shards_completed": 2,
        "num_shards": 8,
        "in_flight": [{"shard": 2, "executor_id": "exec-1", "attempt": 1}],
        "rows_per_s": 11.94,
        "parent_pipeline_id": None,
        "metrics": {
            "exact_match": {"value": 0.75, "lower_bound": 0.512, "upper_bound": 0.897},
            "bleu": {"value": 0.1, "lower_bound": None, "upper_bound": None},
        },
    }
    return {**base, **over}


def rendered(renderable: Any, width: int = 200) -> str:
    console = Console(width=width, record=True, color_system=None, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def test_eta_is_the_pace_seen_since_the_first_sample() -> None:
    seen = live.observe({}, [pipeline(1)], now=100.0)
    assert seen == {1: live.Sample(100.0, 2)}
    assert live.observe(seen, [pipeline(1, shards_completed=5)], now=130.0) == seen  # kept
    (row,) = live.rows([pipeline(1, shards_completed=4)], seen, now=110.0)
    assert row.eta_s == 20.0  # 2 shards in 10 s, 4 to go
    (row,) = live.rows([pipeline(1)], seen, now=110.0)
    assert row.eta_s is None  # nothing done in view yet
    (row,) = live.rows([pipeline(1, status="stopped", shards_completed=4)], seen, now=110.0)
    assert row.eta_s is None  # a stopped pipeline has no ETA


def test_the_main_metric_is_the_experiments_first_scorer() -> None:
    (row,) = live.rows([pipeline(1)], {}, 0.0, {"exp-1": "exact_match"})
    assert (row.metric, row.value, row.low, row.high) == ("exact_match", 0.75, 0.512, 0.897)
    (row,) = live.rows([pipeline(1)], {}, 0.0)
    assert row.metric == "bleu"  # unknown experiment: the first by name
    assert live.estimate(row) == "0.100"  # no interval yet


def test_a_pipeline_as_one_plain_line() -> None:
    seen = {1: live.Sample(0.0, 0)}
    (row,) = live.rows([pipeline(1)], seen, 10.0, {"exp-1": "exact_match"})
    assert live.row_line(row) == (
        "pipeline 1 (p1) ongoing 2/8 shards, exact_match 0.750 [0.512, 0.897], 11.9 rows/s, ETA 30s"
    )
    failed = pipeline(2, status="failed", error="boom", metrics={}, rows_per_s=None)
    (row,) = live.rows([failed], {}, 0.0)
    assert live.row_line(row) == "pipeline 2 (p2) failed 2/8 shards, error: boom"


def test_deleted_pipelines_are_left_out() -> None:
    assert live.rows([pipeline(1, status="deleted")], {}, 0.0) == []


def test_durations() -> None:
    assert [live.duration(s) for s in (None, 4.4, 65, 3725)] == ["-", "4s", "1m05s", "1h02m"]


def test_the_board_shows_bars_metrics_and_operations() -> None:
    pipelines = [pipeline(1), pipeline(2, status="completed", shards_completed=8, rows_per_s=None)]
    ops = [
        {
            "ic_id": 4,
            "operation": "stop",
            "pipeline_id": 1,
            "status": "completed",
            "actor": "alice@lab",
            "reason": "diverging",
            "created_at": 0,
        },
        {"ic_id": 5, "operation": "clone", "pipeline_id": 1, "status": "completed",
         "result": {"pipeline_id": 3}},
        {"ic_id": 6, "operation": "resume", "pipeline_id": 2, "status": "failed",
         "error": "cannot resume pipeline 2: it is completed"},
    ]  # fmt: skip
    rows = live.rows(pipelines, {1: live.Sample(0.0, 0)}, 10.0, {"exp-1": "exact_match"})
    text = rendered(live.board(rows, ops, warning="no scheduler holds the lease", title="t"))
    assert "exact_match [interval]" in text
    assert "0.750 [0.512, 0.897]" in text
    assert "━" in text  # the progress bars
    line1 = next(line for line in text.splitlines() if "│ p1 " in line)
    assert all(cell in line1 for cell in ("2/8", "11.9", "30s")), line1
    assert all(cell in text for cell in ("alice@lab", "diverging", "stop pipeline 1")), text
    assert "completed: pipeline_id=3" in text
    assert "failed: cannot resume pipeline 2: it is completed" in text
    assert "warning: no scheduler holds the lease" in text


def test_only_the_latest_operations_show() -> None:
    ops = [{"ic_id": i, "operation": f"op{i}", "status": "completed"} for i in range(1, 11)]
    text = rendered(live.operations_table(ops))
    assert [f"op{i}" in text for i in (10, 5)] == [True, True]
    assert "op4 " not in text


def test_names_from_the_log_neither_control_the_terminal_nor_become_markup() -> None:
    rows = live.rows([pipeline(1, pipeline_name=EVIL)], {}, 0.0)
    op = {"ic_id": 1, "operation": "stop", "status": "completed", "reason": EVIL, "actor": EVIL}
    console = Console(width=300, record=True, force_terminal=True, file=io.StringIO())
    console.print(live.board(rows, [op]))
    text = console.export_text()
    assert "ok\\x1b[2J[red]FAKE[/red]\\u202e\\nline2" in text.replace("\n", "")
    assert not {"\x1b", "\u202e"} & set(text)
    assert "\x1b[2J" not in console.export_text(styles=True)
    assert "\\x1b[2J[red]FAKE" in live.operation_line(op)
    assert not {"\x1b", "\u202e", "\n"} & set(live.operation_line(op) + live.row_line(rows[0]))


def test_operation_lines_say_who_what_why_and_how_it_ended() -> None:
    op = {"ic_id": 5, "operation": "stop", "pipeline_id": 1, "status": "completed",
          "actor": "alice@lab", "reason": "diverging"}  # fmt: skip
    assert live.operation_line(op) == (
        'operation 5: stop pipeline 1 by alice@lab ("diverging"): completed'
    )
    created = {"ic_id": 1, "operation": "create_experiment", "status": "pending"}
    assert live.operation_line(created) == "operation 1: create_experiment: pending"


def test_the_executors_board() -> None:
    executors = [
        {"executor_id": "exec-2", "slots": 4, "busy": 1, "backends": ["sim", "openai"],
         "loaded_models": ["m1"], "heartbeat_age_s": 0.4},
        {"executor_id": "exec-1", "slots": 2, "busy": 2, "backends": [], "loaded_models": []},
    ]  # fmt: skip
    text = rendered(live.executors_board(executors, "executors"))
    one, two = (next(ln for ln in text.splitlines() if f"exec-{i}" in ln) for i in (1, 2))
    assert text.index("exec-1") < text.index("exec-2")
    assert "│     2 │    2 │    0 │" in one
    assert all(cell in two for cell in ("│     4 │    1 │    3 │", "sim,openai", "m1")), two
    assert "0.4s ago" in two


def test_the_line_printer_writes_a_line_per_change_only() -> None:
    out = io.StringIO()
    show = watching.line_printer(out)
    op = {"ic_id": 2, "operation": "stop", "pipeline_id": 1, "status": "pending"}
    view = watching.View(pipelines=[pipeline(1)], operations=[op], seen={1: live.Sample(0, 0)})
    show(view)
    show(view)  # nothing changed: nothing printed
    later = watching.View(pipelines=[pipeline(1)], operations=[op], seen={1: live.Sample(-9, 0)})
    show(later)  # only the ETA moved: still nothing
    done = {**op, "status": "completed"}
    show(watching.View(pipelines=[pipeline(1, status="stopped")], operations=[done],
                       warning="no scheduler holds the lease"))  # fmt: skip
    show(watching.View(pipelines=[pipeline(1, status="stopped")], operations=[done]))
    lines = [line.split(" ", 1)[1] for line in out.getvalue().splitlines()]
    assert [line.split(",")[0] for line in lines] == [
        "pipeline 1 (p1) ongoing 2/8 shards",
        "operation 2: stop pipeline 1: pending",
        "pipeline 1 (p1) stopped 2/8 shards",
        "operation 2: stop pipeline 1: completed",
        "warning: no scheduler holds the lease",
        "a scheduler holds the lease again",
    ]
    assert ", ETA " in lines[0]  # shown, though a change of it alone prints nothing
