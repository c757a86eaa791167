"""What `inferno watch` and `inferno executors --watch` show, as pure functions: the api's
dicts in, a rich renderable (for a terminal) or plain lines (for a pipe or a file) out.

Every text from the log goes through `terminal.printable` and into rich as `Text`, never as
markup, so a pipeline named `[red]x` or holding an escape sequence shows as it is written.
ETA comes from what this viewer saw: shards completed since it first saw the pipeline over
the time since then (the api's `rows_per_s` is per executor slot, not wall-clock progress).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec
from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from inferno.client.tables import CELL_WIDTH, LAST_CELL_WIDTH, clock, count, field, settled
from inferno.client.terminal import printable

OPERATIONS_SHOWN = 6
STATUS_STYLE = {
    "ongoing": "cyan",
    "completed": "green",
    "stopped": "yellow",
    "failed": "red",
    "deleted": "dim",
}


class Sample(msgspec.Struct, frozen=True):
    """When this viewer first saw a pipeline, and how many shards it had done then."""

    at: float
    shards: int


class Row(msgspec.Struct, frozen=True):
    """One pipeline as the live views show it."""

    pipeline_id: int
    name: str
    status: str
    shards: int
    num_shards: int
    running: int
    metric: str | None
    value: float | None
    low: float | None
    high: float | None
    rows_per_s: float | None
    eta_s: float | None
    parent: int | None
    error: str | None


def observe(
    seen: Mapping[int, Sample], pipelines: Iterable[dict[str, Any]], now: float
) -> dict[int, Sample]:
    """`seen` with a first sample for each pipeline not seen before."""
    first = dict(seen)
    for p in pipelines:
        first.setdefault(p["pipeline_id"], Sample(now, int(p.get("shards_completed") or 0)))
    return first


def eta(sample: Sample | None, shards: int, num_shards: int, now: float) -> float | None:
    """Seconds left at the pace seen since `sample`; None before a shard completed in view."""
    if sample is None or shards <= sample.shards or now <= sample.at:
        return None
    return (num_shards - shards) * (now - sample.at) / (shards - sample.shards)


def main_metric(pipeline: dict[str, Any], chosen: Mapping[str, str]) -> str | None:
    """The experiment's main metric (its first scorer) when known, else the first it has."""
    name = chosen.get(str(pipeline.get("experiment_id")))
    if name:
        return name
    metrics = pipeline.get("metrics") or {}
    return next(iter(sorted(metrics)), None)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def rows(
    pipelines: Iterable[dict[str, Any]],
    seen: Mapping[int, Sample],
    now: float,
    chosen: Mapping[str, str] | None = None,
) -> list[Row]:
    """The pipelines (but deleted ones) as rows in id order; `chosen`: experiment → metric."""
    shown = []
    for p in sorted(pipelines, key=lambda p: p["pipeline_id"]):
        if p.get("status") == "deleted":
            continue
        metric = main_metric(p, chosen or {})
        stats = (p.get("metrics") or {}).get(metric) or {}
        shards, total = int(p.get("shards_completed") or 0), int(p.get("num_shards") or 0)
        ongoing = not settled(p) and p.get("status") != "stopped"
        shown.append(
            Row(
                pipeline_id=p["pipeline_id"],
                name=printable(field(p, "pipeline_name", "?"), CELL_WIDTH),
                status=printable(p.get("status", "?"), CELL_WIDTH),
                shards=shards,
                num_shards=total,
                running=count(p.get("in_flight")),
                metric=printable(metric, CELL_WIDTH) if metric else None,
                value=_number(stats.get("value", stats.get("mean"))),
                low=_number(stats.get("lower_bound")),
                high=_number(stats.get("upper_bound")),
                rows_per_s=_number(p.get("rows_per_s")),
                eta_s=eta(seen.get(p["pipeline_id"]), shards, total, now) if ongoing else None,
                parent=p.get("parent_pipeline_id"),
                error=printable(p["error"], LAST_CELL_WIDTH) if p.get("error") else None,
            )
        )
    return shown


def duration(seconds: float | None) -> str:
    """`42s`, `3m05s`, `1h02m`; `-` when unknown."""
    if seconds is None:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def estimate(row: Row) -> str:
    """`0.750 [0.512, 0.897]`: the main metric with its interval, `-` before any row."""
    if row.value is None:
        return "-"
    if row.low is None or row.high is None:
        return f"{row.value:.3f}"
    return f"{row.value:.3f} [{row.low:.3f}, {row.high:.3f}]"


def _rate(row: Row) -> str:
    return "-" if row.rows_per_s is None else f"{row.rows_per_s:.1f}"


def row_line(row: Row) -> str:
    """`pipeline 1 (small) ongoing 3/8 shards, exact_match 0.750 [0.512, 0.897], 11.9 rows/s,
    ETA 4s`: one pipeline on one line, for output that is not a terminal."""
    parts = [f"pipeline {row.pipeline_id} ({row.name}) {row.status} {row.shards}/{row.num_shards}"]
    parts[0] += " shards"
    if row.metric:
        parts.append(f"{row.metric} {estimate(row)}")
    if row.rows_per_s is not None:
        parts.append(f"{_rate(row)} rows/s")
    if row.eta_s is not None:
        parts.append(f"ETA {duration(row.eta_s)}")
    if row.error:
        parts.append(f"error: {row.error}")
    return ", ".join(parts)


def outcome(op: dict[str, Any]) -> str:
    """`completed`, `completed: pipeline_id=4`, `failed: cannot resume ...`."""
    status = str(op.get("status", "?"))
    if op.get("error"):
        return f"{status}: {op['error']}"
    result = op.get("result")
    if isinstance(result, dict) and result:
        pairs = (f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in result.items())
        return f"{status}: {' '.join(pairs)}"
    return status


def what(op: dict[str, Any]) -> str:
    """`stop pipeline 3`, `create_experiment`."""
    pid = op.get("pipeline_id")
    return f"{op.get('operation', '?')}" + ("" if pid is None else f" pipeline {pid}")


def operation_line(op: dict[str, Any]) -> str:
    """`operation 5: stop pipeline 1 by alice@lab ("diverging"): completed`."""
    who = f" by {op['actor']}" if op.get("actor") else ""
    why = f" ({json.dumps(op['reason'], ensure_ascii=False)})" if op.get("reason") else ""
    return printable(f"operation {op.get('ic_id')}: {what(op)}{who}{why}: {outcome(op)}", 400)


def _text(value: Any, width: int = CELL_WIDTH, style: str = "") -> Text:
    return Text("-" if value is None or value == "" else printable(value, width), style=style)


def _bar(row: Row) -> ProgressBar:
    style = STATUS_STYLE.get(row.status, "")
    return ProgressBar(
        total=max(row.num_shards, 1),
        completed=row.shards,
        width=20,
        complete_style=style or "bar.complete",
        finished_style=style or "bar.finished",
    )


def pipelines_table(shown: Sequence[Row], title: str | None = None) -> Table:
    metrics = {r.metric for r in shown if r.metric}
    single = len(metrics) == 1
    metric_header = metrics.pop() if single else "METRIC"
    table = Table(title=_text(title, 200) if title else None, expand=False, title_justify="left")
    for header in ("ID", "NAME", "STATUS", "PROGRESS", "SHARDS", "RUNNING"):
        table.add_column(header, justify="right" if header in ("ID", "RUNNING") else "left")
    table.add_column(Text(f"{metric_header} [interval]"))  # Text: never markup
    for header in ("ROWS/S", "ETA", "PARENT"):
        table.add_column(header, justify="right")
    for r in shown:
        estimate_cell = estimate(r) if single or not r.metric else f"{r.metric} {estimate(r)}"
        table.add_row(
            Text(str(r.pipeline_id)),
            _text(r.name),
            _text(r.status, style=STATUS_STYLE.get(r.status, "")),
            _bar(r),
            Text(f"{r.shards}/{r.num_shards}"),
            Text(str(r.running)),
            Text(estimate_cell),
            Text(_rate(r)),
            Text(duration(r.eta_s)),
            _text(r.parent),
        )
    return table


def operations_table(operations: Sequence[dict[str, Any]]) -> Table:
    """The latest operations, newest last: who did what, why, and how it ended."""
    table = Table(title=Text("latest operations"), title_justify="left")
    for header in ("IC_ID", "WHEN", "WHAT", "WHO", "WHY", "OUTCOME"):
        table.add_column(header, justify="right" if header == "IC_ID" else "left")
    latest = sorted(operations, key=lambda o: o.get("ic_id") or 0)[-OPERATIONS_SHOWN:]
    for op in latest:
        table.add_row(
            _text(op.get("ic_id")),
            _text(clock(op.get("created_at"))),
            _text(what(op)),
            _text(op.get("actor")),
            _text(op.get("reason")),
            _text(outcome(op), 80, STATUS_STYLE.get("failed", "") if op.get("error") else ""),
        )
    return table


def board(
    shown: Sequence[Row],
    operations: Sequence[dict[str, Any]] = (),
    warning: str | None = None,
    title: str | None = None,
) -> RenderableType:
    """The whole live view: the pipelines, failures under them, the latest operations."""
    parts: list[RenderableType] = [pipelines_table(shown, title)]
    parts += [
        Text(f"pipeline {r.pipeline_id} ({r.name}) failed: {r.error}", style="red")
        for r in shown
        if r.status == "failed" and r.error
    ]
    if operations:
        parts.append(operations_table(operations))
    if warning:
        parts.append(Text(f"warning: {printable(warning, LAST_CELL_WIDTH)}", style="bold yellow"))
    return Group(*parts)


def executors_board(executors: Sequence[dict[str, Any]], title: str | None = None) -> Table:
    """Executors: busy/free slots as a bar, loaded models, heartbeat age."""
    table = Table(title=_text(title, 200) if title else None, title_justify="left")
    for header in ("EXECUTOR", "SLOTS", "BUSY", "FREE", "LOAD", "BACKENDS", "MODELS", "HEARTBEAT"):
        table.add_column(header, justify="right" if header in ("SLOTS", "BUSY", "FREE") else "left")
    for e in sorted(executors, key=lambda e: str(e.get("executor_id"))):
        slots, busy = int(e.get("slots") or 0), int(e.get("busy") or 0)
        age = _number(e.get("heartbeat_age_s"))
        table.add_row(
            _text(e.get("executor_id")),
            Text(str(slots)),
            Text(str(busy)),
            Text(str(max(slots - busy, 0))),
            ProgressBar(total=max(slots, 1), completed=min(busy, slots), width=12),
            _text(",".join(e.get("backends") or [])),
            _text(",".join(e.get("loaded_models") or []), 80),
            Text("-" if age is None else f"{age:.1f}s ago"),
        )
    return table
