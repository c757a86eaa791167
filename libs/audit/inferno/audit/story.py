"""The story of one pipeline in plain lines, from its history entries (`inferno history`).

Created by whom from what, shards done, every stop/resume/delete/clone with who and why,
failures with their reasons, and its lineage. Shard assignments are left out (they are the
scheduler's routine), consecutive completions make one line, and a command nobody answered yet
shows as pending.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from inferno.audit.entries import Entry, each_shard

SETTLING = frozenset(
    {
        "experiment_created",
        "pipeline_created",
        "pipeline_stopped",
        "pipeline_resumed",
        "pipeline_retried",
        "pipeline_deleted",
        "operation_failed",
        "operation_completed",
    }
)


def story(entries: Sequence[Entry], pipeline_id: int) -> list[str]:
    """One line per thing that happened to `pipeline_id`, oldest first, then its lineage."""
    answered = {e.ids.ic_id for e in entries if e.kind != "cmd" and e.type in SETTLING}
    lines: list[str] = []
    done: list[int] = []
    parent: int | None = None
    clones: list[str] = []

    def flush() -> None:
        if done:
            shards = ", ".join(str(s) for s in done)
            lines.append(f"{_when(last_done)}  shard{'s' if len(done) > 1 else ''} {shards} done")
            done.clear()

    last_done = ""
    for entry in each_shard(entries):
        if entry.type == "shard_completed" and entry.ids.pipeline_id == pipeline_id:
            done.append(int(entry.ids.shard or 0))
            last_done = entry.time
            continue
        told = _tell(entry, pipeline_id, answered)
        if entry.type == "pipeline_created":
            if entry.ids.pipeline_id == pipeline_id:
                parent = entry.payload.get("parent_pipeline_id")
            elif entry.payload.get("parent_pipeline_id") == pipeline_id:
                clones.append(f"{entry.ids.pipeline_id} ({_name(entry.payload.get('spec'))})")
        if told:
            flush()
            lines.append(f"{_when(entry.time)}  {told}")
    flush()
    family = [f"parent pipeline {parent}" if parent is not None else "no parent"]
    family.append(f"clones: {', '.join(clones)}" if clones else "no clones")
    lines.append(f"lineage: {'; '.join(family)}")
    return lines


def _tell(entry: Entry, pid: int, answered: set[int | None]) -> str | None:
    p = entry.payload
    if entry.kind == "cmd":
        if entry.ids.ic_id in answered:
            return None  # its answer tells it, with the same who and why
        return f"{_action(entry)} asked{_by(entry)} (ic_id {entry.ids.ic_id}): not answered yet"
    teller = _TELLERS.get(entry.type)
    return teller(entry, p, pid) if teller is not None else None


def _experiment_created(entry: Entry, p: dict[str, Any], pid: int) -> str | None:
    first, specs = p.get("first_pipeline_id") or 0, p.get("pipelines") or []
    spec = specs[pid - first] if first and 0 <= pid - first < len(specs) else None
    what = f" as {_describe(spec)}" if spec else ""
    where = f"experiment {p.get('experiment_id')} ({p.get('experiment_name')})"
    return f"created{what} in {where}, {p.get('num_shards')} shards{_by(entry)}{_ic(entry)}"


def _pipeline_created(entry: Entry, p: dict[str, Any], pid: int) -> str | None:
    if entry.ids.pipeline_id == pid:
        parent = p.get("parent_pipeline_id")
        source = f" as a clone of pipeline {parent}" if parent is not None else ""
        return f"created {_describe(p.get('spec'))}{source}{_by(entry)}{_ic(entry)}"
    name = _name(p.get("spec"))
    return f"cloned into pipeline {entry.ids.pipeline_id} ({name}){_by(entry)}{_ic(entry)}"


def _settled(verb: str) -> Callable[[Entry, dict[str, Any], int], str | None]:
    def tell(entry: Entry, p: dict[str, Any], pid: int) -> str | None:
        aborted = p.get("aborted_shards")
        extra = f", in-flight shards {aborted} aborted" if aborted else ""
        return f"{verb}{_by(entry)}{_ic(entry)}{extra}"

    return tell


def _failed(entry: Entry, p: dict[str, Any], pid: int) -> str | None:
    if entry.type == "pipeline_failed":
        return f"FAILED: {p.get('reason')}"
    if entry.type == "shard_failed":
        return f"shard {p.get('shard')} failed (attempt {p.get('attempt')}): {p.get('error')}"
    if entry.type == "shard_released":
        attempt = p.get("attempt")
        return f"shard {p.get('shard')} will be retried (attempt {attempt}): {p.get('reason')}"
    operation = p.get("operation") or "command"
    return f"{operation} refused{_by(entry)}{_ic(entry)}: {p.get('error')}"


def _extended(entry: Entry, rows: dict[str, Any]) -> str:
    first, count, shards = rows.get("first_shard", 0), rows.get("row_count"), rows.get("num_shards")
    where = f"shards {first}-{first + shards - 1}" if isinstance(shards, int) else "new shards"
    return f"extended by {count} rows as {where}{_by(entry)}{_ic(entry)}"


def _budget_set(entry: Entry, p: dict[str, Any], pid: int) -> str:
    scope = "its own budget" if p.get("pipeline_id") is not None else "the experiment's budget"
    return f"{scope} set to {_budget(p.get('budget'))}{_by(entry)}{_ic(entry)}"


def _budget(budget: Any) -> str:
    if not isinstance(budget, dict):
        return "?"
    parts = [f"${budget['usd']:,.2f}" if budget.get("usd") is not None else None]
    parts.append(f"{budget['tokens']:,} tokens" if budget.get("tokens") is not None else None)
    return " and ".join(p for p in parts if p) or "none"


_TELLERS: dict[str, Callable[[Entry, dict[str, Any], int], str | None]] = {
    "experiment_created": _experiment_created,
    "pipeline_created": _pipeline_created,
    "pipeline_stopped": _settled("stopped"),
    "pipeline_pruned": lambda e, p, pid: (
        f"stopped by the {p.get('rule')} prune policy: {p.get('reason')}"
    ),
    "budget_exhausted": lambda e, p, pid: f"stopped by its budget: {p.get('reason')}",
    "budget_set": _budget_set,
    "experiment_extended": lambda e, p, pid: _extended(e, p.get("rows") or {}),
    "pipeline_resumed": _settled("resumed"),
    "pipeline_retried": _settled("retried (its incomplete shards run again)"),
    "pipeline_deleted": _settled("deleted"),
    "pipeline_completed": lambda e, p, pid: "completed: every shard done",
    "pipeline_failed": _failed,
    "shard_failed": _failed,
    "shard_released": _failed,
    "operation_failed": _failed,
}


def _action(entry: Entry) -> str:
    return entry.type.replace("_pipeline", "").replace("_", " ")


def _by(entry: Entry) -> str:
    who = f" by {entry.actor}" if entry.actor else ""
    return f'{who}: "{entry.reason}"' if entry.reason else who


def _ic(entry: Entry) -> str:
    return f" (ic_id {entry.ids.ic_id})" if entry.ids.ic_id else ""


def _name(spec: Any) -> str:
    return str(spec.get("pipeline_name")) if isinstance(spec, dict) else "?"


def _describe(spec: Any) -> str:
    if not isinstance(spec, dict):
        return "?"
    model = (spec.get("model_config") or {}).get("model")
    return f"'{_name(spec)}' ({spec.get('pipeline_type')}{f', model {model}' if model else ''})"


def _when(time: str) -> str:
    return f"{time[:19]}Z" if len(time) >= 19 else time
