"""Plain-text tables of pipelines, operations and executors, as the api returns them (dicts).

Read tolerantly: a missing field shows as '-', never as a crash, so a newer api still prints.
Every cell is made printable (control characters escaped) and cut to a width with …, so a name
from the log can neither control the terminal nor widen a table without bound.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from inferno.client.terminal import printable

TERMINAL = frozenset({"completed", "failed", "deleted"})
CELL_WIDTH = 40
LAST_CELL_WIDTH = 160  # the last column (an error, a result) widens no other column


def field(pipeline: dict[str, Any], key: str, default: Any = None) -> Any:
    """A pipeline's field, whether the api puts it at the top level or under `spec`."""
    if key in pipeline:
        return pipeline[key]
    spec = pipeline.get("spec")
    return spec.get(key, default) if isinstance(spec, dict) else default


def count(value: Any) -> int:
    """`in_flight` as a number, whether the api sends a count, a list or a mapping."""
    if isinstance(value, int):
        return value
    return len(value) if isinstance(value, list | dict) else 0


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Plain-text columns: numbers right-aligned, the rest left-aligned; None shows as '-';
    cells cut to CELL_WIDTH (the last column to LAST_CELL_WIDTH)."""
    last = len(headers) - 1
    headers = [printable(h, CELL_WIDTH) for h in headers]
    cells = [
        [_cell(v, LAST_CELL_WIDTH if i == last else CELL_WIDTH) for i, v in enumerate(row)]
        for row in rows
    ]
    numeric = [
        all(_is_number(row[i]) for row in cells if row[i] != "-")
        and any(r[i] != "-" for r in cells)
        for i in range(len(headers))
    ]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]

    def line(values: Sequence[str], header: bool = False) -> str:
        parts = [
            v.rjust(w) if numeric[i] and not header else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers, header=True), *(line(r) for r in cells)])


def _cell(value: Any, width: int) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return printable(value, width)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def metric_names(pipelines: Iterable[dict[str, Any]]) -> list[str]:
    return sorted({name for p in pipelines for name in (p.get("metrics") or {})})


def metric_value(pipeline: dict[str, Any], name: str) -> float | None:
    """A metric's current value (`value`; `mean` from an api older than the intervals)."""
    stats = (pipeline.get("metrics") or {}).get(name)
    if not isinstance(stats, dict):
        return None
    value = stats.get("value", stats.get("mean"))
    return float(value) if isinstance(value, int | float) else None


def pipelines_table(pipelines: Sequence[dict[str, Any]]) -> str:
    metrics = metric_names(pipelines)
    headers = ["ID", "NAME", "TYPE", "STATUS", "SHARDS", "RUNNING", "ROWS", "ERRORS"]
    headers += [*metrics, "PARENT"]
    several = len({p.get("experiment_id") for p in pipelines}) > 1
    if several:
        headers.append("EXPERIMENT")
    rows = []
    for p in sorted(pipelines, key=lambda p: p["pipeline_id"]):
        kind = field(p, "pipeline_type")
        if p.get("simulated") and kind != "sim":
            kind = f"{kind} (sim)"
        rows.append(
            [
                p["pipeline_id"],
                field(p, "pipeline_name"),
                kind,
                p.get("status"),
                f"{p.get('shards_completed', 0)}/{p.get('num_shards', '?')}",
                count(p.get("in_flight")),
                p.get("rows_processed"),
                p.get("row_errors"),
                *(metric_value(p, m) for m in metrics),
                p.get("parent_pipeline_id"),
                *([p.get("experiment_id")] if several else []),
            ]
        )
    return format_table(headers, rows)


def pipeline_failures(pipelines: Sequence[dict[str, Any]]) -> list[str]:
    """`pipeline 3 (dead) failed: ...`: why each failed pipeline failed, for under the table."""
    return [
        printable(
            f"pipeline {p['pipeline_id']} ({field(p, 'pipeline_name', '?')}) failed: {p['error']}",
            LAST_CELL_WIDTH,
        )
        for p in sorted(pipelines, key=lambda p: p["pipeline_id"])
        if p.get("status") == "failed" and p.get("error")
    ]


def pipeline_waits(pipelines: Sequence[dict[str, Any]]) -> list[str]:
    """`pipeline 4 (big) cannot be placed: needs ...`: why shards wait, for under the table."""
    return [
        printable(
            f"pipeline {p['pipeline_id']} ({field(p, 'pipeline_name', '?')}) cannot be placed:"
            f" {p['unschedulable']}",
            LAST_CELL_WIDTH,
        )
        for p in sorted(pipelines, key=lambda p: p["pipeline_id"])
        if p.get("unschedulable")
    ]


def interval(entry: dict[str, Any]) -> str | None:
    """`[0.612, 0.843]`: a metric's confidence interval, None where it has none yet."""
    low, high = entry.get("lower_bound"), entry.get("upper_bound")
    if not isinstance(low, int | float) or not isinstance(high, int | float):
        return None
    return f"[{low:.3f}, {high:.3f}]"


_METHOD_LABELS = {"confidence_sequence": "confidence sequence (valid at every look)"}


def leaderboard_table(board: dict[str, Any]) -> str:
    """GET /experiments/{id}/leaderboard as a table, best first, with a title line."""
    entries = board.get("pipelines") or []
    metric = board.get("metric")
    levels = {e.get("confidence_level") for e in entries} - {None}
    level = f"{levels.pop():.0%} " if len(levels) == 1 else ""
    used = sorted({str(e.get("ci_method")) for e in entries if e.get("ci_method")})
    methods = ", ".join(_METHOD_LABELS.get(m, f"{m} (fixed-sample)") for m in used)
    name = printable(board.get("experiment_name", ""), CELL_WIDTH)
    title = (
        f"experiment {printable(board.get('experiment_id'), CELL_WIDTH)} ({name})"
        f" by {printable(metric, CELL_WIDTH) if metric else '(no metric)'}"
        + (f", {level}confidence intervals: {methods}" if methods else "")
    )
    headers = ["RANK", "ID", "NAME", "STATUS", "SHARDS", str(metric or "VALUE"), "INTERVAL"]
    headers += ["N", "ERRORS"]
    rows = [
        [
            e.get("rank"),
            e.get("pipeline_id"),
            e.get("pipeline_name"),
            e.get("status"),
            f"{e.get('shards_completed', 0)}/{e.get('num_shards', '?')}",
            e.get("value"),
            interval(e),
            e.get("count"),
            e.get("row_errors"),
        ]
        for e in entries
    ]
    return f"{printable(title)}\n{format_table(headers, rows)}"


AUTOMATIC = {"pipeline_pruned": ("prune", "policy"), "budget_exhausted": ("budget stop", "budget")}
"""Events that stop a pipeline without a command: the operation and actor `ops` shows."""


def automatic_stop(entry: dict[str, Any]) -> dict[str, Any]:
    """An events-API entry of an `AUTOMATIC` stop, shaped as an operation for the table."""
    payload = entry.get("payload") or {}
    operation, actor = AUTOMATIC[entry["type"]]
    return {
        "ic_id": None,
        "operation": operation,
        "pipeline_id": payload.get("pipeline_id"),
        "status": "completed",
        "created_at": payload.get("at"),
        "processed_at": payload.get("at"),
        "actor": actor,
        "reason": payload.get("reason"),
    }


def in_order(
    operations: Sequence[dict[str, Any]], stops: Sequence[dict[str, Any]] = ()
) -> list[dict[str, Any]]:
    """Operations in ic_id order, each automatic stop (`automatic_stop`) placed before the
    first operation created after it."""
    merged = sorted(operations, key=lambda o: o["ic_id"])
    for stop in sorted(stops, key=lambda o: o.get("created_at") or 0.0):
        at = stop.get("created_at") or 0.0
        later = (i for i, op in enumerate(merged) if (op.get("created_at") or 0.0) > at)
        merged.insert(next(later, len(merged)), stop)
    return merged


def operations_table(operations: Sequence[dict[str, Any]]) -> str:
    """Operations as given (`in_order` orders them), with who issued each (ACTOR) and why
    (REASON)."""
    headers = ["IC_ID", "OPERATION", "PIPELINE", "STATUS", "TOOK_MS", "CREATED", "ACTOR"]
    headers += ["REASON", "RESULT"]
    rows = []
    for op in operations:
        created, processed = op.get("created_at"), op.get("processed_at")
        took = round((processed - created) * 1000, 1) if created and processed else None
        outcome = f"error: {op['error']}" if op.get("error") else _pairs(op.get("result"))
        rows.append(
            [
                op["ic_id"],
                op.get("operation"),
                op.get("pipeline_id"),
                op.get("status"),
                took,
                clock(created),
                op.get("actor"),
                op.get("reason"),
                outcome,
            ]
        )
    return format_table(headers, rows)


def _pairs(result: Any) -> str | None:
    """`{"pipeline_id": 4}` → `pipeline_id=4`: results read as text, not JSON."""
    if not isinstance(result, dict) or not result:
        return None
    return " ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in result.items())


def executors_table(executors: Sequence[dict[str, Any]]) -> str:
    headers = [
        "EXECUTOR", "SLOTS", "BUSY", "RESOURCES", "BACKENDS", "MODELS", "HOST", "PID",
        "HEARTBEAT_AGE_S",
    ]  # fmt: skip
    rows = [
        [
            e.get("executor_id"),
            e.get("slots"),
            e.get("busy"),
            resources_cell(e),
            ",".join(e.get("backends") or []),
            ",".join(e.get("loaded_models") or []),
            e.get("hostname"),
            e.get("pid"),
            e.get("heartbeat_age_s"),
        ]
        for e in sorted(executors, key=lambda e: str(e.get("executor_id")))
    ]
    return format_table(headers, rows)


def resources_cell(executor: dict[str, Any]) -> str:
    """`gpus 1/2 gpu_mem_gb 40/160`: used of declared, per resource beside slots."""
    capacity, used = executor.get("capacity") or {}, executor.get("used") or {}
    return " ".join(
        f"{key} {used.get(key, 0):g}/{amount:g}"
        for key, amount in sorted(capacity.items())
        if key != "slots" and isinstance(amount, int | float)
    )


def clock(timestamp: Any) -> str | None:
    if not isinstance(timestamp, int | float) or not timestamp:
        return None
    return datetime.fromtimestamp(timestamp).strftime("%H:%M:%S")


def settled(pipeline: dict[str, Any]) -> bool:
    """Nothing more will happen to it without a command: terminal, or stopped and drained."""
    status = pipeline.get("status")
    return status in TERMINAL or (status == "stopped" and count(pipeline.get("in_flight")) == 0)


def estimate_table(answer: dict[str, Any]) -> str:
    """POST /experiments?dry_run=true as a table, with the total and how it was estimated."""
    entries = answer.get("pipelines") or []
    headers = ["NAME", "TYPE", "PROMPT TOKENS", "COMPLETION MAX", "TOKENS MAX", "COST MAX"]
    rows = [
        [
            e.get("pipeline_name"),
            e.get("pipeline_type"),
            e.get("prompt_tokens"),
            e.get("completion_tokens_max"),
            e.get("tokens_max"),
            "-" if e.get("cost_max") is None else f"{e['cost_max']:.4f}",
        ]
        for e in entries
    ]
    total = answer.get("total") or {}
    cost = total.get("cost_max")
    unpriced = total.get("unpriced") or []
    lines = [
        f"dry run over {answer.get('rows')} rows: nothing was created",
        format_table(headers, rows),
        f"total: at most {total.get('tokens_max')} tokens"
        + (f", at most {cost:.4f} in cost" if cost is not None else "")
        + (f" (no prices for {', '.join(map(str, unpriced))})" if unpriced else ""),
        f"({answer.get('method')})",
    ]
    budgets = [("", total.get("budget"), total.get("within_budget"))]
    budgets += [
        (f"{e.get('pipeline_name')}'s ", e.get("budget"), e.get("within_budget")) for e in entries
    ]
    for whose, budget, fits in budgets:
        if budget:
            verdict = "fits" if fits else "is over it: the run stops before it passes it"
            lines.append(f"{whose}budget {_budget(budget)}: the worst case {verdict}")
    return "\n".join(lines)


def _budget(budget: dict[str, Any]) -> str:
    parts = [f"${budget['usd']:,.2f}" if budget.get("usd") is not None else ""]
    parts.append(f"{budget['tokens']:,} tokens" if budget.get("tokens") is not None else "")
    return " and ".join(p for p in parts if p)
